"""The seam between the control plane and its I/O: a link carries messages, a clock tells time.

The sender's Session talks to every node through a `Link` and to the data path through the
small interfaces below, so the same code runs over TCP (a `Channel` is a Link, the shared ring,
relay and producer are the rest) or in memory with a manual clock (ka.transport.testing).
"""

from __future__ import annotations

from collections.abc import Callable
from threading import Event
from typing import Protocol

from ka.errors import KaError
from ka.transport.messages import Message

Clock = Callable[[], float]  # seconds, monotonic: time.monotonic, or a ManualClock


class Link(Protocol):
    """One ordered, authenticated message stream to a peer.

    `send` raises OSError once the peer is gone; `recv` raises ProtocolError on EOF or a
    message that is not one of ours; `close` may be called more than once."""

    closed: bool

    def send(self, msg: Message) -> None: ...

    def recv(self, deadline: float | None = None) -> Message: ...

    def close(self) -> None: ...


class RingView(Protocol):
    """What the sender's coordinator needs of its retention ring."""

    @property
    def end(self) -> int: ...

    def admit_from_start(self, margin: int) -> bool: ...

    def set_floor(self, floor: int | None) -> None: ...

    def close(self) -> None: ...


class RelayView(Protocol):
    """The sender's own relay: which sons it feeds."""

    port: int

    def allow(self, tickets: dict[str, str]) -> None: ...

    def drop(self, son: str) -> None: ...


class ProducerView(Protocol):
    """The producer of the stream, as the coordinator sees it."""

    raw: int
    digest: str
    error: KaError | None
    started_at: float
    eof_at: float | None
    done: Event

    def start(self, hops: int = 1) -> None:
        """Start producing for a tree `hops` deep (the chunks are sized for it)."""
        ...

    def abort(self) -> None: ...
