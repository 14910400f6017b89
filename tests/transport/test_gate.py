"""The accept loop and its gate, attacked from 127.0.0.x: errors, trickling peers, floods."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from typing import Any

import pytest

from ka.transport import auth
from ka.transport.channel import initiate, respond
from ka.transport.errors import ProtocolError
from ka.transport.frame import session_key
from ka.transport.gate import PER_ADDRESS, Gate
from ka.transport.messages import Attach, Ok
from ka.transport.relay import Relay, SharedRing, listen

ROOT = session_key(os.urandom(32))


def test_gate_counts_per_address_and_in_total() -> None:
    gate = Gate(per_address=2, total=3)
    assert gate.enter("a") and gate.enter("a")
    assert not gate.enter("a")  # a third from the same address
    assert gate.enter("b")
    assert not gate.enter("c")  # the total is reached
    gate.leave("a")
    assert gate.enter("c") and gate.held() == 3 and gate.refused == 2


class FlakyListener:
    """A listening socket whose first accepts fail as when the process is out of files."""

    def __init__(self, sock: socket.socket, failures: int) -> None:
        self._sock = sock
        self.failures = failures

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures > 0:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return self._sock.accept()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_a_relay_goes_on_accepting_after_accept_fails() -> None:
    notes: list[tuple[str, str]] = []
    ring = SharedRing(1024 * 1024)
    flaky = FlakyListener(listen("127.0.0.1"), failures=3)
    relay = Relay(ring, ROOT, flaky, lambda kind, text: notes.append((kind, text)))  # type: ignore[arg-type]
    try:
        relay.allow({"son": "t"})
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
            chan = initiate(sock, ROOT, auth.DATA)
            chan.send(Attach("son", 0, "t"))
            sock.settimeout(10)
            assert chan.recv() == Ok(0)
        assert flaky.failures == 0
        assert [k for k, _ in notes].count("accept-error") == 3
        assert "Too many open files" in notes[0][1]
    finally:
        relay.close()
        ring.close()


def test_the_handshake_has_one_deadline_however_slowly_bytes_trickle(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A byte every 0.2 s: a timeout per recv never fires, the 21-byte hello takes 4 s.
    monkeypatch.setattr("ka.transport.channel.HANDSHAKE_TIMEOUT", 1.0)
    server, client = socket.socketpair()
    stop = threading.Event()

    def trickle() -> None:
        for byte in auth.hello(auth.CONTROL, os.urandom(auth.NONCE_LEN)):
            if stop.wait(0.2):
                return
            try:
                client.send(bytes([byte]))
            except OSError:
                return

    t = threading.Thread(target=trickle)
    t.start()
    started = time.monotonic()
    try:
        with pytest.raises(ProtocolError, match="too long"):
            respond(server, ROOT, (auth.CONTROL,))
        assert time.monotonic() - started < 2.0
    finally:
        stop.set()
        t.join(5)
        server.close()
        client.close()


def test_one_address_cannot_take_every_slot() -> None:
    ring = SharedRing(1024 * 1024)
    relay = Relay(ring, ROOT, listen("127.0.0.1"))
    held: list[socket.socket] = []
    try:
        relay.allow({"son": "t"})
        for _ in range(PER_ADDRESS):
            s = socket.socket()
            s.bind(("127.0.0.66", 0))
            s.connect(("127.0.0.1", relay.port))
            held.append(s)
        time.sleep(0.3)  # all of them greeted, each in its handshake
        extra = socket.socket()
        extra.bind(("127.0.0.66", 0))
        extra.connect(("127.0.0.1", relay.port))
        extra.settimeout(5)
        assert extra.recv(1) == b""  # closed at once, long before any handshake deadline
        extra.close()
        # A rightful son from another address is served while the flood holds its slots.
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
            chan = initiate(sock, ROOT, auth.DATA)
            chan.send(Attach("son", 0, "t"))
            sock.settimeout(10)
            assert chan.recv() == Ok(0)
    finally:
        for s in held:
            s.close()
        relay.close()
        ring.close()
