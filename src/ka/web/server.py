"""The dashboard's HTTP server: uvicorn in a thread of the golden process, for one run.

The listening socket is made here, before the thread starts, so that a port in use is an
error of the command (with a hint) and not a log line of uvicorn's; leaving the `with`
tells the event streams to end and the server to stop, and joins its thread.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

from ka.errors import KaError, UsageError

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class DashboardError(KaError):
    exit_code = 1


def parse_address(text: str) -> tuple[str, int]:
    """`[ADDR:]PORT` ("8080", "0.0.0.0:8080", "[::]:8080") -> (address, port); the address
    is 127.0.0.1 unless one is given."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") if host.startswith("[") else host
    if not port.isdigit() or not 0 <= int(port) <= 65535 or not host or (
            ":" in host and not text.startswith("[")):
        raise UsageError(f"--web {text}: expected [ADDR:]PORT (e.g. 8080, 0.0.0.0:8080, "
                         "[::1]:8080)")
    return host, int(port)


def url_of(host: str, port: int, token: str) -> str:
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/?token={token}"


class Dashboard:
    """`with Dashboard(app, host, port, closing) as d:` serves `app` until the end."""

    def __init__(self, app: Any, host: str, port: int, closing: threading.Event) -> None:
        self.app, self.host, self.port, self.closing = app, host, port, closing
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> Dashboard:
        import uvicorn

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            sock = socket.create_server((self.host, self.port), family=family, backlog=128)
        except OSError as e:
            raise UsageError(f"the dashboard cannot listen on {self.host}:{self.port}: "
                             f"{e.strerror or e}",
                             hint="choose another --web port, or an address of this machine"
                             ) from e
        self.port = int(sock.getsockname()[1])
        self._sock = sock
        # Our own quiet loggers: the CLI reports what matters, uvicorn's lines would only
        # break the live table.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, ws="none")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="ka-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() >= deadline:
                self._stop()
                raise DashboardError(f"the dashboard did not start: {self._error or 'timeout'}")
            time.sleep(0.02)
        return self

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as e:  # noqa: BLE001 - said by __enter__ or __exit__
            self._error = e

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop()

    def _stop(self) -> None:
        self.closing.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
            if self._thread.is_alive():  # uvicorn ignored us: at least stop serving
                self._server.force_exit = True
                self._thread.join(STOP_TIMEOUT)
        self._sock.close()
