"""``rutter-pipeline webhooks serve [--host H] [--port P]``: run the webhook receiver in the foreground.

The warehouse comes from ``WAREHOUSE_URL`` (else the embedded PostgreSQL) and is migrated first;
the secret that verifies signatures from ``RUTTER_CLIENT_SECRET``, without which it refuses to start,
as it does without a token key for a warehouse of your own (``RUTTER_TOKEN_KEY``): webhooks carry
access tokens, which it stores encrypted.
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from rutter_pipeline.settings import Settings
from rutter_pipeline.warehouse.embedded import warehouse_url as resolve_warehouse_url
from rutter_pipeline.warehouse.migrations import migrate
from rutter_pipeline.warehouse.tokens import TokenKeyMissing, token_cipher
from rutter_pipeline.webhooks.app import WEBHOOK_PATH, create_app
from rutter_pipeline.webhooks.server import bind, uvicorn_config

log = logging.getLogger(__name__)

DEFAULT_PORT = 8765
READY_PREFIX = "webhook receiver listening on "


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    serve = sub.add_parser("serve", help="run the webhook receiver")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any)")
    serve.add_argument("--max-body-bytes", type=int, default=1_000_000, help="larger bodies get 413")


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    secret = settings.client_secret
    if not secret:
        print(
            "rutter-pipeline webhooks serve: RUTTER_CLIENT_SECRET is not set; the receiver needs the org's "
            "client secret to verify X-Rutter-Signature and will not start without it",
            file=sys.stderr,
        )
        return 2
    try:
        token_cipher()  # refuse now, not at the first webhook that carries a token
    except (TokenKeyMissing, ValueError) as exc:
        print(f"rutter-pipeline webhooks serve: {exc}", file=sys.stderr)
        return 2
    warehouse_url = resolve_warehouse_url(settings)
    migrate(warehouse_url)
    app = create_app(warehouse_url, secret, max_body_bytes=args.max_body_bytes)
    sock = bind(args.host, args.port)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"{READY_PREFIX}http://{host}:{sock.getsockname()[1]}{WEBHOOK_PATH}", flush=True)
    try:
        uvicorn.Server(uvicorn_config(app, access_log=True, log_level="info")).run(sockets=[sock])
    finally:
        sock.close()
    return 0
