"""The control plane's messages, node states and event kinds.

One frozen dataclass per kind of message, in the catalogue CONTROL (ka.transport.codec: on the
wire one JSON object, its kind under "t" and its fields by name, sealed by
ka.transport.channel). `decode` validates a message once, when it arrives: an unknown kind, a
missing or unknown field or a value of the wrong type raises MessageError, so the code that acts
on a message never checks a field again. docs/transport.md lists these messages;
tests/transport/test_messages.py keeps it in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ka.transport.codec import Catalogue, Message, MessageError, encode

CONTROL = Catalogue("control")
KINDS = CONTROL.kinds
decode = CONTROL.decode
reference = CONTROL.reference  # the table in docs/transport.md
_kind = CONTROL.kind


class NodeState(StrEnum):
    """A node as the sender sees it during a session."""

    WAITING = "waiting"  # joined, not placed yet
    ACTIVE = "active"  # placed, receiving
    DONE = "done"  # complete, digest verified
    FAILED = "failed"  # finished but its copy is not right (consumer, digest)
    EVICTED = "evicted"  # dropped from the plan (lost contact, stalled)


class Outcome(StrEnum):
    """A node's result in the session's report."""

    OK = "ok"
    FAILED = "failed"
    EVICTED = "evicted"


class EventKind(StrEnum):
    """The stable words of the transport's events (`ka send --json` prints them)."""

    WARNING = "warning"
    LISTENING = "listening"
    DISCOVERY = "discovery"
    FOUND = "found"
    JOINED = "joined"
    LATE = "late"
    LEFT = "left"
    GO_NOW = "go-now"
    START = "start"
    ATTACHED = "attached"
    PROGRESS = "progress"
    EOF = "eof"
    CONSUMER_FAILED = "consumer-failed"
    UPSTREAM_LOST = "upstream-lost"
    EVICTED = "evicted"
    REATTACHED = "reattached"
    MOVED = "moved"
    DONE = "done"
    FAILED = "failed"
    RELEASED = "released"
    COMPLETE = "complete"
    STRAY = "stray"
    BAD_KEY = "bad-key"
    REFUSED = "refused"
    ACCEPT_ERROR = "accept-error"


NODE, SENDER, SON, PARENT = "node -> sender", "sender -> node", "son -> parent", "parent -> son"


# node -> sender, on the control connection ---------------------------------------------------
@_kind("join", NODE)
@dataclass(frozen=True)
class Join(Message):
    """First message of a control connection. With go_now, only "start now" (no data)."""

    protocol: int
    name: str | None = None
    port: int | None = None  # the node's data listener; None for go_now
    go_now: bool = False
    wait_release: bool = False
    start_now: bool = False


@_kind("pos", NODE)
@dataclass(frozen=True)
class Pos(Message):
    """Heartbeat and progress: frame-stream bytes received and given to the consumer."""

    received: int
    consumed: int
    ended: bool


@_kind("failing", NODE)
@dataclass(frozen=True)
class Failing(Message):
    """The node's consumer failed; the node still relays to its sons."""

    reason: str


@_kind("lost", NODE)
@dataclass(frozen=True)
class Lost(Message):
    """The node lost its parent (the sender decides about healing)."""

    parent: str
    offset: int
    reason: str
    bad_key: bool = False


@_kind("done", NODE)
@dataclass(frozen=True)
class Done(Message):
    """The node's copy is finished: what it can prove."""

    ok: bool
    bytes: int
    digest: str
    consumer_status: int | None
    reason: str | None
    seconds: float
    attachment: str | None = None  # base64


# sender -> node, on the control connection ---------------------------------------------------
@_kind("welcome", SENDER)
@dataclass(frozen=True)
class Welcome(Message):
    """The join is accepted: the node's id, the ring size to keep, the session id (hex)."""

    id: str
    ring_size: int
    salt: str


@_kind("refused", SENDER)
@dataclass(frozen=True)
class Refused(Message):
    """The join is refused (other protocol, duplicate, too late), and why."""

    reason: str


@_kind("plan", SENDER)
@dataclass(frozen=True)
class Plan(Message):
    """Where to take the stream from: parent "" is the sender (address empty: the sender's)."""

    parent: str
    address: str
    port: int
    epoch: int
    position: int
    ticket: str


@dataclass(frozen=True)
class SonTicket:
    id: str
    ticket: str


@_kind("sons", SENDER)
@dataclass(frozen=True)
class Sons(Message):
    """Sons that may attach to this node, each with the ticket it must show."""

    sons: tuple[SonTicket, ...]


@_kind("drop_son", SENDER)
@dataclass(frozen=True)
class DropSon(Message):
    """Stop feeding this son (it was evicted)."""

    id: str


@_kind("evict", SENDER)
@dataclass(frozen=True)
class Evict(Message):
    """The node is dropped from the session, and why; it ends as failed."""

    reason: str


@_kind("abort", SENDER)
@dataclass(frozen=True)
class Abort(Message):
    """The whole session ends, and why (producer failed, too few nodes, stopped)."""

    reason: str


@_kind("ping", SENDER)
@dataclass(frozen=True)
class Ping(Message):
    """The sender is alive: every second, also while nodes wait for the start."""


@_kind("finish", SENDER)
@dataclass(frozen=True)
class Finish(Message):
    """Release: the node may end."""


@_kind("ok", "sender -> node, parent -> son")
@dataclass(frozen=True)
class Ok(Message):
    """go-now accepted (no offset), or an attach accepted at `offset`."""

    offset: int | None = None


# son -> parent, on a data connection, before the frames --------------------------------------
@_kind("attach", SON)
@dataclass(frozen=True)
class Attach(Message):
    """Feed me from `offset`: the son's id and the ticket the sender gave it for this
    parent."""

    id: str
    offset: int
    ticket: str


@_kind("no", PARENT)
@dataclass(frozen=True)
class No(Message):
    """The attach is refused (no ticket, not assigned, fed already, offset gone), and why."""

    reason: str


__all__ = ["CONTROL", "KINDS", "Message", "MessageError", "decode", "encode", "reference"]
