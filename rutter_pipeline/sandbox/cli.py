"""``rutter-pipeline sandbox``: run the local Rutter simulator alone (docs/architecture.md §4.2).

Prints the base URL and each connection's id and access token at start (the sandbox's tokens are
made-up credentials for a local simulator, printed so a developer can paste them), then serves
until interrupted.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from datetime import datetime
from pathlib import Path

import uvicorn

from rutter_pipeline.sandbox.app import build_app
from rutter_pipeline.sandbox.config import SandboxConfig, config_from_dict
from rutter_pipeline.sandbox.server import READY_PREFIX, listening_socket, uvicorn_config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    parser.add_argument("--client-id", default="demo")
    parser.add_argument("--client-secret", default="demo-secret")
    parser.add_argument("--connections", type=int, default=3, help="demo connections, ready at start")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--orders-per-day", type=int, default=40)
    parser.add_argument(
        "--uniform",
        action="store_true",
        help="every connection gets exactly --orders-per-day (default: a demo mix of sizes, "
        "one in five a 3,000-orders-a-day merchant)",
    )
    parser.add_argument("--history-days", type=int, default=30)
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--now", default=None, help="simulated start time, ISO 8601 UTC (default: real now)")
    parser.add_argument("--rate-limit", type=int, default=500, help="requests per 10 s before 429")
    parser.add_argument("--fault-429", type=float, default=0.0, help="share of requests answered 429")
    parser.add_argument("--fault-5xx", type=float, default=0.0, help="share of requests answered 500/502/503")
    parser.add_argument("--fault-delay", type=float, default=0.0, help="seconds added to every response")
    parser.add_argument(
        "--no-prewarm",
        action="store_true",
        help="do not generate the connections' history in the background while idle",
    )
    parser.add_argument("--config-json", default=None, help=argparse.SUPPRESS)  # used by run_sandbox(subprocess)


def _config(args: argparse.Namespace) -> SandboxConfig:
    if args.config_json:
        return config_from_dict(json.loads(Path(args.config_json).read_text()))
    now = datetime.fromisoformat(args.now.replace("Z", "+00:00")) if args.now else None
    config = SandboxConfig(
        client_id=args.client_id,
        client_secret=args.client_secret,
        seed=args.seed,
        connections=args.connections,
        orders_per_day=args.orders_per_day,
        history_days=args.history_days,
        uniform=args.uniform,
        now=now,
        webhook_url=args.webhook_url,
        rate_limit_per_10s=args.rate_limit,
        prewarm=not args.no_prewarm,
    )
    config.faults.rate_429, config.faults.rate_5xx = args.fault_429, args.fault_5xx
    config.faults.delay_seconds = args.fault_delay
    return config


def run(args: argparse.Namespace) -> int:
    config = _config(args)
    app, sandbox = build_app(config)
    sock = listening_socket(args.host, args.port)
    base_url = f"http://{args.host}:{sock.getsockname()[1]}/versioned"
    for conn in sandbox.connections.values():
        p = conn.merchant.p
        print(
            f"connection {conn.id} access_token {conn.access_token} platform {p.platform} "
            f"orders/day {p.orders_per_day:g}"
        )
    print(f"client id {config.client_id}; control API at {base_url.removesuffix('/versioned')}/_sandbox/")
    print(f"{READY_PREFIX}{base_url}", flush=True)
    gc.freeze()  # a long-running server: keep the start-up objects out of every collection
    uvicorn.Server(uvicorn_config(app)).run(sockets=[sock])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rutter_pipeline.sandbox", description=__doc__.splitlines()[0])
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
