"""The control plane without a network: in-memory links, a manual clock, a stand-in data path.

Modelled on trio's memory stream pairs and httpx's MockTransport: the real `Session` runs
unchanged over `link_pair()` ends, every message crossing them is encoded and decoded as on
the wire (so validation is exercised too), and time moves only when a test says so. A
`ControlPlane` holds a Session and its nodes' far ends; a test plays the nodes by sending
their messages and reads what the sender told each of them:

    plane = ControlPlane(SendOptions(nodes=2))
    a, b = plane.join("a"), plane.join("b")
    plane.tick()                       # both joined: the session starts
    assert a.last(Plan).parent == ""   # a hangs under the sender, b under a
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from ka.errors import KaError
from ka.transport.errors import ProtocolError
from ka.transport.health import HEARTBEAT
from ka.transport.messages import (
    Done,
    Join,
    Message,
    Pos,
    decode,
    encode,
)
from ka.transport.options import PROTOCOL, Event, SendOptions, SessionReport
from ka.transport.session import NodeRecord, Session

M = TypeVar("M", bound=Message)


class ManualClock:
    """A monotonic clock that moves only by `advance` (or jumps by `set`)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class LinkClosed(ConnectionResetError):
    """A send on a memory link whose other end is gone."""


class MemoryLink:
    """One end of an in-memory message pair (see link_pair)."""

    def __init__(self) -> None:
        self.peer: MemoryLink | None = None
        self.inbox: deque[bytes] = deque()
        self.closed = False
        self.sent = 0

    def send(self, msg: Message) -> None:
        assert self.peer is not None
        if self.broken:
            raise LinkClosed("the link is closed")
        self.sent += 1
        self.peer.inbox.append(encode(msg))

    def recv(self, deadline: float | None = None) -> Message:
        """The next message (never blocks: ProtocolError when none is waiting)."""
        if self.inbox:
            return decode(self.inbox.popleft())
        raise ProtocolError("connection closed by peer" if self.gone else "nothing to receive")

    def pending(self) -> Iterator[Message]:
        while self.inbox:
            yield decode(self.inbox.popleft())

    @property
    def broken(self) -> bool:
        """Closed here or there."""
        return self.closed or (self.peer is not None and self.peer.closed)

    @property
    def gone(self) -> bool:
        """Broken, and nothing left to read."""
        return self.broken and not self.inbox

    def close(self) -> None:
        self.closed = True


def link_pair() -> tuple[MemoryLink, MemoryLink]:
    a, b = MemoryLink(), MemoryLink()
    a.peer, b.peer = b, a
    return a, b


class FakeRing:
    """The sender's ring as the coordinator sees it: where production is, the floor it sets."""

    def __init__(self, size: int = 64 * 1024 * 1024) -> None:
        self.size = size
        self.end = 0
        self.floor: int | None = 0
        self.closed = False

    def admit_from_start(self, margin: int) -> bool:
        return self.end + margin <= self.size

    def set_floor(self, floor: int | None) -> None:
        self.floor = floor

    def close(self) -> None:
        self.closed = True


class FakeRelay:
    """The sender's own relay: which sons it was told to feed, and which to drop."""

    def __init__(self) -> None:
        self.port = 5000
        self.allowed: dict[str, str] = {}
        self.dropped: list[str] = []

    def allow(self, tickets: dict[str, str]) -> None:
        self.allowed.update(tickets)

    def drop(self, son: str) -> None:
        self.allowed.pop(son, None)
        self.dropped.append(son)


class FakeProducer:
    """A producer that makes what the test says, when it says so."""

    def __init__(self, ring: FakeRing, clock: ManualClock) -> None:
        self._ring, self._clock = ring, clock
        self.raw = 0
        self.digest = ""
        self.error: KaError | None = None
        self.started_at = 0.0
        self.eof_at: float | None = None
        self.done = threading.Event()
        self.running = False
        self.hops = 0  # the depth it was started for
        self.aborted = False

    def start(self, hops: int = 1) -> None:
        self.running, self.started_at, self.hops = True, self._clock(), hops

    def abort(self) -> None:
        self.aborted = True
        self.done.set()

    def produce(self, nbytes: int) -> None:
        assert self.running and self.eof_at is None
        self.raw += nbytes
        self._ring.end += nbytes  # frame-stream bytes = raw bytes: no framing cost here

    def finish(self, digest: str = "d1g35t") -> None:
        self.digest, self.eof_at = digest, self._clock()
        self.done.set()


@dataclass
class RemoteNode:
    """A node's end of its control link, played by the test."""

    name: str
    address: str
    port: int
    link: MemoryLink
    plane: ControlPlane
    got: list[Message] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def record(self) -> NodeRecord:
        return self.plane.session.nodes[self.id]

    def send(self, msg: Message) -> None:
        """Send as the node would; once the sender closed the link it goes nowhere."""
        if not self.link.broken:
            self.link.send(msg)

    def report(self, received: int, consumed: int | None = None, ended: bool = False) -> None:
        self.send(Pos(received, received if consumed is None else consumed, ended))

    def done(self, nbytes: int | None = None, digest: str | None = None, ok: bool = True,
             reason: str | None = None) -> None:
        producer = self.plane.producer
        raw = producer.raw if nbytes is None else nbytes
        self.report(raw, ended=True)
        self.send(Done(ok, raw, producer.digest if digest is None else digest, 0 if ok else 1,
                       reason, 1.0))

    def messages(self) -> list[Message]:
        """Everything the sender sent this node so far (kept in `got`)."""
        self.got.extend(self.link.pending())
        return self.got

    def of(self, kind: type[M]) -> list[M]:
        return [m for m in self.messages() if isinstance(m, kind)]

    def last(self, kind: type[M]) -> M:
        found = self.of(kind)
        assert found, f"{self.name} was sent no {kind.kind!r} message: {self.messages()}"
        return found[-1]

    def cut(self) -> None:
        """The connection breaks (the node died, or a reset)."""
        self.link.close()


class ControlPlane:
    """A real Session over memory links with a manual clock and a stand-in data path."""

    def __init__(self, options: SendOptions, clock: ManualClock | None = None) -> None:
        self.clock = clock or ManualClock()
        self.ring = FakeRing(options.ring_size)
        self.relay = FakeRelay()
        self.producer = FakeProducer(self.ring, self.clock)
        self.events: list[Event] = []
        self.session = Session(options, self.ring, self.relay, self.producer,
                               self.events.append, clock=self.clock)
        self.nodes: dict[str, RemoteNode] = {}
        self._ends: dict[str, MemoryLink] = {}
        self._count = 0
        self.report: SessionReport | None = None

    def join(self, name: str, *, wait_release: bool = False, start_now: bool = False,
             protocol: int = PROTOCOL, address: str | None = None) -> RemoteNode:
        self._count += 1
        near, far = link_pair()
        node = RemoteNode(name, address or f"10.0.{self._count // 250}.{self._count % 250 + 1}",
                          4000, far, self)
        msg = Join(protocol, name=name, port=node.port, wait_release=wait_release,
                   start_now=start_now)
        record = self.session.join(near, node.address, msg, self.clock())
        if record is not None:
            self.nodes[record.id] = node
            self._ends[record.id] = near
        return node

    def go_now(self) -> RemoteNode:
        near, far = link_pair()
        node = RemoteNode("go", "10.9.9.9", 0, far, self)
        self.session.join(near, node.address, Join(PROTOCOL, go_now=True), self.clock())
        return node

    def pump(self) -> None:
        """Hand the sender everything its nodes sent, and every link that broke."""
        now = self.clock()
        for node_id, near in list(self._ends.items()):
            for msg in near.pending():
                self.session.receive(node_id, msg, now)
            if near.gone:
                del self._ends[node_id]
                self.session.closed(node_id, "connection closed by peer", now)

    def tick(self, seconds: float = 0.0) -> SessionReport | None:
        """Let `seconds` pass (default: none), pump, and run the sender's clock once."""
        self.clock.advance(seconds)
        self.pump()
        if self.report is None:
            self.report = self.session.tick(self.clock())
        return self.report

    def run(self, seconds: float, step: float = HEARTBEAT / 2,
            alive: tuple[RemoteNode, ...] = ()) -> SessionReport | None:
        """Let time pass in steps; the `alive` nodes keep reporting their last position."""
        t = 0.0
        while t < seconds and self.report is None:
            for node in alive:
                p = node.record.progress
                node.report(p.received, p.consumed, p.ended)
            self.tick(step)
            t += step
        return self.report

    def kinds(self) -> list[str]:
        return [str(e.kind) for e in self.events]

    def event(self, kind: str, node: RemoteNode | None = None) -> Event:
        found = [e for e in self.events if e.kind == kind
                 and (node is None or e.node == node.id)]
        assert found, f"no {kind!r} event{f' for {node.name}' if node else ''}: {self.kinds()}"
        return found[-1]
