"""The webhook receiver: verifies Rutter's signed POSTs and stores each event once in the inbox.

No Dagster here. The sensors read what it stores (``connections.inbox``) and drive the connection
lifecycle (``connections.lifecycle``); the receiver itself only answers fast.
"""

from rutter_pipeline.webhooks.app import WEBHOOK_PATH, create_app
from rutter_pipeline.webhooks.server import run_receiver

__all__ = ["WEBHOOK_PATH", "create_app", "run_receiver"]
