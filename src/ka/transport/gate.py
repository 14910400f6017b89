"""Listening without being jammed: the accept loop of every ka listener and its gate.

Anyone on the network can connect before proving the key. So that nobody can hold a port
for good, the loop never ends on an error of its own (out of file descriptors, say: it
notes it, waits a little and goes on), and connections that have not proven the key yet are
limited per source address and in total: more are closed at once, before they get a thread.
The handshake itself has one deadline for all of it (ka.transport.channel), so a slot is
held a few seconds at most however slowly a peer trickles its bytes.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from ka.transport.messages import EventKind

PER_ADDRESS = 16  # unauthenticated connections from one address at once
TOTAL = 128  # unauthenticated connections at once, from anywhere
PAUSE_MIN, PAUSE_MAX = 0.05, 1.0  # back-off after a failed accept
NOTE_EVERY = 5.0  # seconds between two notes about refused connections

T = TypeVar("T")


class Gate:
    """Slots for connections that have not proven the key yet (thread-safe)."""

    def __init__(self, per_address: int = PER_ADDRESS, total: int = TOTAL) -> None:
        self.per_address = per_address
        self.total = total
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.refused = 0  # ever, for the notes

    def enter(self, address: str) -> bool:
        with self._lock:
            if self._held[address] >= self.per_address or sum(self._held.values()) >= self.total:
                self.refused += 1
                return False
            self._held[address] += 1
            return True

    def leave(self, address: str) -> None:
        with self._lock:
            self._held[address] -= 1
            if self._held[address] <= 0:
                del self._held[address]

    def held(self) -> int:
        with self._lock:
            return sum(self._held.values())


def accept_loop(
    listener: socket.socket,
    greet: Callable[[socket.socket, tuple[str, int]], T | None],
    serve: Callable[[T], None],
    stopped: Callable[[], bool],
    note: Callable[[str, str], None],
    gate: Gate | None = None,
    name: str = "ka-conn",
) -> None:
    """Accept until `stopped()`. Each connection gets a thread that runs `greet` (handshake and
    first message, under the gate) and, if that returned something, `serve` with it (the
    connection proved the key: its slot is free again). `greet` owns the socket: it closes
    it when it returns None."""
    gate = gate or Gate()
    pause = PAUSE_MIN
    noted_at, noted = 0.0, 0
    while not stopped():
        try:
            sock, peer = listener.accept()
        except OSError as e:
            if stopped():
                return
            note(EventKind.ACCEPT_ERROR, f"cannot accept a connection ({e.strerror or e}); "
                                 f"trying again in {pause:g} s")
            time.sleep(pause)
            pause = min(2 * pause, PAUSE_MAX)
            continue
        pause = PAUSE_MIN
        address = str(peer[0])
        if not gate.enter(address):
            sock.close()
            now = time.monotonic()
            if now - noted_at >= NOTE_EVERY:
                note(EventKind.REFUSED,
                     f"refused {gate.refused - noted} connection(s) over the limit of "
                     f"unauthenticated ones (last from {address})")
                noted_at, noted = now, gate.refused
            continue
        try:
            threading.Thread(target=_connection, args=(sock, peer, greet, serve, gate),
                             name=name, daemon=True).start()
        except RuntimeError as e:  # no more threads: this one is refused, the loop goes on
            gate.leave(address)
            sock.close()
            note(EventKind.ACCEPT_ERROR, f"cannot serve a connection from {address}: {e}")


def _connection(sock: socket.socket, peer: tuple[str, int],
                greet: Callable[[socket.socket, tuple[str, int]], T | None],
                serve: Callable[[T], None], gate: Gate) -> None:
    try:
        greeted = greet(sock, peer)
    finally:
        gate.leave(str(peer[0]))
    if greeted is not None:
        serve(greeted)
