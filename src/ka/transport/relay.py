"""The data plane shared by the sender and every node.

SharedRing wraps a RetentionRing for threads: one writer (the producer, or the upstream
link) and several readers (the local consumer, one feeder per son), each with a cursor.
The writer blocks while the slowest cursor (and, on the sender, the slowest node anywhere)
is `capacity` behind, which is the back-pressure that paces the whole tree.

Relay is a data listener: sons connect, prove the session key, name themselves and their
resume offset, and are fed frames from the ring if the sender assigned them to us. Every key
holder can pass the handshake, so a son also shows the ticket the sender gave it for this
parent, and while its feed is alive no second connection can take its name.
"""

from __future__ import annotations

import hmac
import select
import socket
import threading
import time
from collections.abc import Callable

from ka.transport import auth
from ka.transport.channel import HANDSHAKE_TIMEOUT, Channel, respond, shut
from ka.transport.errors import ProtocolError
from ka.transport.frame import END, frame_kind
from ka.transport.gate import Gate, accept_loop
from ka.transport.messages import Attach, EventKind, No, Ok
from ka.transport.ring import RetentionRing

WAIT_STEP = 0.25
ASSIGNMENT_WAIT = 5.0
SOCKET_BUFFER = 4 * 1024 * 1024


class RingClosed(Exception):
    pass


class SharedRing:
    """One lock, two conditions, so a wake-up goes only to threads that can act on it:
    readers wait for `data` (a new frame, the end, closing); the writer waits for `room`
    (a cursor moved, left, or the floor changed). Readers never care about each other."""

    def __init__(self, capacity: int) -> None:
        self.ring = RetentionRing(capacity)
        self._lock = threading.Lock()
        self._data = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._cursors: dict[object, int] = {}
        self._floor: int | None = None
        self.ended = False
        self.closed = False

    @property
    def end(self) -> int:
        return self.ring.end

    def _low(self) -> int:
        low = min(self._cursors.values(), default=self.ring.end)
        return low if self._floor is None else min(low, self._floor)

    def put(self, frame: bytes | bytearray, *, last: bool = False) -> None:
        """Append a frame once there is room; raises RingClosed when the session is over."""
        with self._lock:
            while True:
                if self.closed:
                    raise RingClosed
                if self.ring.end + len(frame) - self._low() <= self.ring.capacity:
                    break
                self._room.wait(WAIT_STEP)
            self.ring.append(frame)
            self.ended = self.ended or last
            self.ring.trim(min(self._cursors.values(), default=self.ring.end))
            self._data.notify_all()

    def get(self, offset: int, stop: Callable[[], bool]) -> bytes | bytearray:
        """The frame at `offset`, waiting for it; RingClosed if stopped or no longer held.

        The timed wait only bounds how late `stop` is noticed while no data comes."""
        with self._lock:
            while offset >= self.ring.end:
                if self.closed or stop() or self.ended:
                    raise RingClosed
                self._data.wait(WAIT_STEP)
            frame = self.ring.frame_at(offset)
            if frame is None or stop():
                raise RingClosed
            return frame

    def reach(self, offset: int, deadline: float) -> bool:
        """Wait until the ring reaches `offset`: a node moved to the tail is ahead of its new
        parent, which catches up once the slow node no longer paces it. False at `deadline`."""
        with self._lock:
            while self.ring.end < offset and not (self.closed or self.ended):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._data.wait(min(left, WAIT_STEP))
            return self.ring.end >= offset

    def add_cursor(self, key: object, offset: int) -> bool:
        with self._lock:
            if not self.ring.holds(offset):
                return False
            self._cursors[key] = offset
            return True

    def move(self, key: object, offset: int) -> None:
        with self._lock:
            self._cursors[key] = offset
            self._room.notify_all()  # only a writer waits for room

    def remove(self, key: object) -> None:
        with self._lock:
            self._cursors.pop(key, None)
            self._room.notify_all()

    def admit_from_start(self, margin: int) -> bool:
        """Hold production for a node that needs the stream from offset 0, if still held.

        Atomic with `put`, so no frame can slip out of retention between check and hold.
        """
        with self._lock:
            if self.ring.start != 0 or self.ring.end + margin > self.ring.capacity:
                return False
            self._floor = 0
            return True

    def set_floor(self, floor: int | None) -> None:
        with self._lock:
            self._floor = floor
            self._room.notify_all()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._data.notify_all()
            self._room.notify_all()


def tune(sock: socket.socket) -> None:
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError:
            pass


def listen(bind: str, port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    return sock


class _Feed:
    def __init__(self, son: str, chan: Channel) -> None:
        self.son = son
        self.chan = chan
        self.dropped = False

    def drop(self) -> None:
        self.dropped = True
        self.chan.close()


def _alive(feed: _Feed) -> bool:
    """Whether a feed's son still holds its connection. A son never sends anything after its
    attach, so a readable socket means it closed or reset it (or broke the protocol)."""
    if feed.dropped or feed.chan.closed:
        return False
    poll = select.poll()
    try:
        poll.register(feed.chan.sock, select.POLLIN)
    except (OSError, ValueError):  # closed meanwhile
        return False
    return not poll.poll(0)


class Relay:
    """Serves the ring to the sons the sender assigned to this node (or to the sender)."""

    def __init__(
        self,
        ring: SharedRing,
        root_key: bytes,
        listener: socket.socket,
        on_note: Callable[[str, str], None] = lambda kind, text: None,
    ) -> None:
        self.ring = ring
        self._root = root_key
        self._note = on_note
        self._allowed: dict[str, str] = {}  # son -> its ticket for us
        self._feeds: dict[str, _Feed] = {}
        self._lock = threading.Condition()
        self._closed = False
        self.listener = listener
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=accept_loop, name="relay-accept", daemon=True, args=(
            listener, self._greet, self._serve, lambda: self._closed, self._note, Gate(),
            "relay-son")).start()

    def allow(self, tickets: dict[str, str]) -> None:
        """Feed these sons (id -> the ticket the sender gave each of them for us)."""
        with self._lock:
            self._allowed.update(tickets)
            self._lock.notify_all()

    def drop(self, son: str) -> None:
        with self._lock:
            self._allowed.pop(son, None)
            feed = self._feeds.pop(son, None)
        if feed is not None:
            feed.drop()

    def feeding(self) -> list[str]:
        with self._lock:
            return list(self._feeds)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            feeds = list(self._feeds.values())
            self._feeds.clear()
        shut(self.listener)
        self.listener.close()
        for feed in feeds:
            feed.drop()

    def _greet(self, sock: socket.socket, peer: tuple[str, int]
               ) -> tuple[Channel, str, str, int, str] | None:
        """Handshake and attach, both within one deadline (the connection holds a slot of
        the gate until then)."""
        where = f"{peer[0]}:{peer[1]}"
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT + ASSIGNMENT_WAIT
        try:
            _, chan = respond(sock, self._root, (auth.DATA,), deadline)
            msg = chan.recv(deadline)
            if not isinstance(msg, Attach):
                raise ProtocolError("expected attach")
        except (ProtocolError, OSError) as e:
            self._note(EventKind.STRAY, f"dropped data connection from {where}: {e}")
            sock.close()
            return None
        return chan, where, msg.id, msg.offset, msg.ticket

    def _serve(self, attach: tuple[Channel, str, str, int, str]) -> None:
        chan, where, son, offset, ticket = attach
        sock = chan.sock
        deadline = time.monotonic() + ASSIGNMENT_WAIT
        expected = self._wait_assignment(son)
        if expected is None:
            self._refuse(chan, f"{son} is not assigned to this parent")
            return
        if not hmac.compare_digest(ticket.encode(), expected.encode()):
            self._refuse(chan, f"{where} attached as {son} without its ticket")
            return
        feed = _Feed(son, chan)
        with self._lock:
            old = self._feeds.get(son)
            if old is not None and _alive(old):
                busy = True
            else:
                busy = False
                self._feeds[son] = feed
        if busy:
            self._refuse(chan, f"{where} attached as {son}, which is fed already")
            return
        if old is not None:
            old.drop()  # its son went away (the socket says so): this is its new link
        if not (self.ring.reach(offset, deadline) and self.ring.add_cursor(feed, offset)):
            with self._lock:
                if self._feeds.get(son) is feed:
                    del self._feeds[son]
            self._refuse(chan, f"offset {offset} is not retained here")
            return
        try:
            sock.settimeout(None)
            tune(sock)
            chan.send(Ok(offset))
            self._feed(feed, offset)
        except (OSError, RingClosed):
            pass
        finally:
            self.ring.remove(feed)
            with self._lock:
                if self._feeds.get(son) is feed:
                    del self._feeds[son]
            feed.chan.close()

    def _wait_assignment(self, son: str) -> str | None:
        """The ticket of `son` once the sender assigned it to us, None after ASSIGNMENT_WAIT."""
        deadline = time.monotonic() + ASSIGNMENT_WAIT
        with self._lock:
            while son not in self._allowed and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(left)
            return self._allowed.get(son)

    def _refuse(self, chan: Channel, reason: str) -> None:
        self._note(EventKind.REFUSED, reason)
        try:
            chan.send(No(reason))
        except OSError:
            pass
        chan.close()

    def _feed(self, feed: _Feed, offset: int) -> None:
        sock = feed.chan.sock
        pos = offset
        def stop() -> bool:
            return feed.dropped
        while not feed.dropped:
            frame = self.ring.get(pos, stop)
            sock.sendall(frame)
            pos += len(frame)
            self.ring.move(feed, pos)
            if frame_kind(frame) == END:
                break
        # After END the son closes first; wait for that so no byte is cut by an early RST.
        sock.settimeout(10.0)
        try:
            sock.recv(1)
        except OSError:
            pass
