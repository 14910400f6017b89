"""`ka web` (the history alone) and the `--web` options of `ka clone`."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ka.clone.deploy import DEFAULT_LOGS
from ka.clone.status import STATUS_PORT
from ka.signals import stop_on_signals
from ka.web.state import Deployment


def add_web_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("web dashboard (--web)")
    g.add_argument("--web", metavar="[ADDR:]PORT",
                   help="serve a live dashboard and JSON API (/api/v1/) for the run, on "
                        "127.0.0.1 unless ADDR is given; other hosts need the printed token")
    g.add_argument("--web-token-file", metavar="FILE",
                   help="the dashboard's token (default: a random one, printed at the start)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "web", help="serve the history of past deployments as a web dashboard",
        description="Serve the stored reports of past `ka clone` runs (pages and /api/v1/) "
                    "until SIGINT/SIGTERM. `ka clone --web` serves a run live.")
    p.add_argument("address", metavar="[ADDR:]PORT",
                   help="where to listen (127.0.0.1 unless ADDR is given)")
    p.add_argument("--logs", default=DEFAULT_LOGS, metavar="DIR",
                   help=f"the --logs of `ka clone` (default {DEFAULT_LOGS})")
    p.add_argument("--web-token-file", metavar="FILE",
                   help="the token for other hosts (default: a random one, printed)")
    p.set_defaults(func=cmd_web)


def cmd_web(args: argparse.Namespace) -> int:
    with stop_on_signals(threading.Event()) as stop, \
            dashboard(args.address, args.web_token_file, Path(args.logs), None, None):
        while not stop.wait(0.5):
            pass
    print("ka: dashboard stopped", file=sys.stderr)
    return 0


@contextmanager
def dashboard(address: str, token_file: str | None, logs: Path, live: Deployment | None,
              key: bytes | None, status_port: int = STATUS_PORT) -> Iterator[Any]:
    """Serve the dashboard for the life of the `with`; prints where, with the token."""
    from ka.web.access import new_token, token_from_file
    from ka.web.app import create_app
    from ka.web.server import Dashboard, parse_address, url_of

    host, port = parse_address(address)
    token = token_from_file(token_file) if token_file else new_token()
    closing = threading.Event()

    def node_log(node_address: str) -> tuple[str, list[str]]:
        from ka.clone.status import recent_log

        return recent_log(node_address, status_port, key)

    def follow(node_address: str, put: Any, stopped: Any) -> None:
        from ka.web.nodelog import follow_log

        follow_log(node_address, status_port, key, put, stopped)

    app = create_app(live, logs, token, node_log=node_log if live is not None else None,
                     follow_log=follow if live is not None else None, closing=closing)
    with Dashboard(app, host, port, closing) as d:
        print(f"ka: dashboard at {url_of(host, d.port, token)}", file=sys.stderr, flush=True)
        yield d


@contextmanager
def maybe_dashboard(args: argparse.Namespace, live: Deployment, key: bytes | None
                    ) -> Iterator[Deployment | None]:
    """`ka clone`'s dashboard when --web asks for one (else nothing)."""
    if args.web is None:
        if args.web_token_file is not None:
            from ka.errors import UsageError

            raise UsageError("--web-token-file needs --web")
        yield None
        return
    with dashboard(args.web, args.web_token_file, Path(args.logs), live, key):
        yield live
