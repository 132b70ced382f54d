"""The connection states (``rutter.connections.state``) and the two sets every caller selects by.

The database stores the enum's values as plain text, so a member compares equal to the stored string.
"""

from __future__ import annotations

from enum import StrEnum


class ConnectionState(StrEnum):
    PENDING = "pending"  # registered; Rutter's initial sync is still running
    READY = "ready"
    NEEDS_UPDATE = "needs_update"  # the merchant must re-authenticate
    DISABLED = "disabled"
    REMOVED = "removed"  # an operator's decision: nothing automatic moves a connection out of it


# Schedules and sensors run syncs only for a live connection; only a live one has runs a pause stops.
LIVE: frozenset[ConnectionState] = frozenset({ConnectionState.READY})
# Paused until Rutter says the connection works again (CONNECTION_UPDATED, or a status poll).
PAUSED: frozenset[ConnectionState] = frozenset({ConnectionState.NEEDS_UPDATE, ConnectionState.DISABLED})
