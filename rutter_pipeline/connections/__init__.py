"""Connections: which merchants we ingest, their state, and the lifecycle that moves it. No Dagster.

``states`` names the states and the live / paused sets; ``registry`` is the one writer of
``rutter.connections`` and its history (``rutter.connection_events``); ``inbox`` stores Rutter's
webhooks (``rutter.webhook_events``) for the sensors; ``lifecycle`` turns webhooks and status polls
into state changes and decisions.
"""
