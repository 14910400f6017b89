"""ka.lab.forward: a port of this machine forwarded into a namespace of its own."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from ka.errors import UsageError
from ka.lab.forward import PortForward, join_netns

pytestmark = pytest.mark.root


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"ka-t{os.getpid()}{secrets.token_hex(2)}-fwd"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def _echo_inside(netns: str) -> tuple[socket.socket, threading.Thread]:
    """A server on 127.0.0.1 of `netns` that sends back, upper-cased, what it got once the
    client has half-closed."""
    with ThreadPoolExecutor(1, initializer=join_netns, initargs=(netns,)) as inside:
        server = inside.submit(socket.create_server, ("127.0.0.1", 0)).result()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            got = b""
            while data := conn.recv(65536):
                got += data
            conn.sendall(got.upper())

    t = threading.Thread(target=serve)
    t.start()
    return server, t


def test_bytes_both_ways_and_the_port_closed_at_the_end(netns: str) -> None:
    server, t = _echo_inside(netns)
    port = server.getsockname()[1]
    # Nothing listens on that port here: only the forward reaches the namespace's loopback.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    payload = secrets.token_hex(300_000).encode()  # larger than any buffer on the way
    threads = threading.active_count()
    with PortForward(0, netns, target_port=port) as f:
        with socket.create_connection(("127.0.0.1", f.port), timeout=10) as c:
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)  # the half-close goes through: the server answers
            back = b""
            while data := c.recv(65536):
                back += data
        assert back == payload.upper()
        forwarded = f.port
    t.join(10)
    server.close()
    assert threading.active_count() <= threads  # the loop's and the namespace's threads
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", forwarded), timeout=2).close()


def test_a_port_nobody_serves_inside_closes_the_connection(netns: str) -> None:
    with PortForward(0, netns) as f, socket.create_connection(("127.0.0.1", f.port),
                                                              timeout=10) as c:
        assert c.recv(10) == b""


def test_a_port_in_use_here_is_said_before_anything(netns: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        with pytest.raises(UsageError, match="cannot listen"):
            PortForward(taken.getsockname()[1], netns).__enter__()
