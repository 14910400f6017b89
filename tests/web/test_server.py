"""The server in a thread of its own: started, reachable on loopback, stopped and joined."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ka.errors import UsageError
from ka.web.app import create_app
from ka.web.server import Dashboard, parse_address, url_of

from .feed import fed

TOKEN = "a-token-of-the-server-tests-0123"


@pytest.mark.parametrize(("text", "expected"), [
    ("8080", ("127.0.0.1", 8080)), ("0.0.0.0:8080", ("0.0.0.0", 8080)),
    ("[::1]:8080", ("::1", 8080)), ("10.1.2.3:0", ("10.1.2.3", 0))])
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "x", "::1:80", "host:99999", ":80", "1.2.3.4:"])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_address(text)


def test_url_of() -> None:
    assert url_of("127.0.0.1", 8080, "T") == "http://127.0.0.1:8080/?token=T"
    assert url_of("::1", 8080, "T") == "http://[::1]:8080/?token=T"


def test_serves_in_a_thread_and_stops(tmp_path: Path) -> None:
    closing = threading.Event()
    live = fed(finished=False)
    app = create_app(live, tmp_path, TOKEN, closing=closing)
    before = {t.name for t in threading.enumerate()}
    with Dashboard(app, "127.0.0.1", 0, closing) as d:
        base = f"http://127.0.0.1:{d.port}"
        with urllib.request.urlopen(base + "/api/v1/deployment", timeout=5) as r:
            assert json.load(r)["prefix"] == "t"
        page = urllib.request.urlopen(base + "/", timeout=5).read().decode()
        assert "/static/live.js" in page
        # A live event stream must not hold the server up at the end.
        stream = urllib.request.urlopen(base + "/api/v1/events", timeout=5)
        assert stream.readline() == b"retry: 2000\n"
    assert "ka-web" not in {t.name for t in threading.enumerate()} - before
    stream.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", d.port), timeout=1).close()


def test_a_port_in_use_is_a_usage_error(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        app = create_app(None, tmp_path, TOKEN)
        with pytest.raises(UsageError, match="cannot listen"):
            Dashboard(app, "127.0.0.1", port, threading.Event()).__enter__()


def test_ka_web_serves_the_history_until_sigterm(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from .feed import stored

    stored(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ka", "web", "--logs", str(tmp_path),
                             str(port)], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline() if proc.stderr else ""
        assert line.startswith(f"ka: dashboard at http://127.0.0.1:{port}/?token="), line
        token = line.strip().rpartition("=")[2]
        assert len(token) >= 16
        url = f"http://127.0.0.1:{port}/api/v1/history"
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    assert [d["name"] for d in json.load(r)] == ["t"]
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
