"""The control plane's messages, node states and event kinds.

One frozen dataclass per kind of message. On the wire a message is one JSON object, its kind
under "t" and its fields by name (sealed by ka.transport.channel). `decode` validates a message
once, when it arrives: an unknown kind, a missing or unknown field or a value of the wrong type
raises MessageError, so the code that acts on a message never checks a field again.
docs/transport.md lists these messages; tests/transport/test_messages.py keeps it in step.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from ka.transport.errors import ProtocolError


class MessageError(ProtocolError):
    """A control message that is not one of ours: unknown kind, a field missing or unknown,
    or a value of the wrong type."""


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


class Message:
    """Base of every control message; `kind` is its word on the wire."""

    kind: ClassVar[str]
    direction: ClassVar[str]  # who sends it, for the documentation


KINDS: dict[str, type[Message]] = {}
M = TypeVar("M", bound=type[Message])


def _kind(kind: str, direction: str) -> Callable[[M], M]:
    def register(cls: M) -> M:
        cls.kind, cls.direction = kind, direction
        KINDS[kind] = cls
        return cls
    return register


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


# encoding and validation ---------------------------------------------------------------------
# Each kind's fields are compiled once into checkers: the sender decodes every heartbeat of
# every node, and walking the type hints per message cost more than the JSON itself.
Check = Callable[[Any], Any]


def encode(msg: Message) -> bytes:
    return json.dumps(_plain(msg), separators=(",", ":")).encode()


def _plain(obj: Any) -> Any:
    if isinstance(obj, Message):
        return {"t": obj.kind, **{name: _plain(getattr(obj, name)) for name in _names(type(obj))}}
    if dataclasses.is_dataclass(obj):
        return {name: _plain(getattr(obj, name)) for name in _names(type(obj))}
    if isinstance(obj, tuple):
        return [_plain(v) for v in obj]
    return obj


def decode(payload: bytes) -> Message:
    try:
        raw = json.loads(payload)
    except ValueError as e:
        raise MessageError("malformed control message") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("t"), str):
        raise MessageError("malformed control message")
    cls = KINDS.get(raw.pop("t"))
    if cls is None:
        raise MessageError("unknown control message")
    return typing.cast(Message, _builder(cls)(raw))


_FIELDS: dict[type, tuple[tuple[str, Any, bool], ...]] = {}
_BUILDERS: dict[type, Check] = {}


def _fields(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    if cls not in _FIELDS:
        hints = typing.get_type_hints(cls)
        _FIELDS[cls] = tuple(
            (f.name, hints[f.name], f.default is dataclasses.MISSING)
            for f in dataclasses.fields(cls))
    return _FIELDS[cls]


def _names(cls: type) -> tuple[str, ...]:
    return tuple(name for name, _, _ in _fields(cls))


def _builder(cls: type) -> Check:
    if cls not in _BUILDERS:
        _BUILDERS[cls] = _compile_builder(cls)
    return _BUILDERS[cls]


def _compile_builder(cls: type) -> Check:
    label = getattr(cls, "kind", cls.__name__)
    fields = [(name, _checker(tp, f"{label}.{name}"), required)
              for name, tp, required in _fields(cls)]
    known = {name for name, _, _ in fields}

    def build(raw: Any) -> Any:
        if not isinstance(raw, dict):
            raise MessageError(f"{cls.__name__}: expected an object")
        if not raw.keys() <= known:
            raise MessageError(f"{label}: unknown field {sorted(raw.keys() - known)[0]!r}")
        values = {}
        for name, check, required in fields:
            if name in raw:
                values[name] = check(raw[name])
            elif required:
                raise MessageError(f"{label}: field {name!r} missing")
        return cls(**values)
    return build


def _checker(tp: Any, where: str) -> Check:
    origin = typing.get_origin(tp)
    if origin is types.UnionType or origin is typing.Union:
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        assert len(inner) == 1, "only X | None"
        check = _checker(inner[0], where)
        return lambda v: None if v is None else check(v)
    if origin is tuple:
        item = _checker(typing.get_args(tp)[0], where)

        def items(v: Any) -> Any:
            if not isinstance(v, list):
                raise _wrong(v, "list", where)
            return tuple(item(x) for x in v)
        return items
    if dataclasses.is_dataclass(tp):
        return lambda v: _builder(typing.cast(type, tp))(v)
    if tp is float:
        def number(v: Any) -> float:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise _wrong(v, "float", where)
            return float(v)
        return number
    exact = tp  # int must not take a bool (bool is an int in Python)

    def simple(v: Any) -> Any:
        if type(v) is not exact:
            raise _wrong(v, exact.__name__, where)
        return v
    return simple


def _wrong(value: Any, expected: str, where: str) -> MessageError:
    return MessageError(f"{where}: {type(value).__name__} is not {expected}")


# documentation -------------------------------------------------------------------------------
def reference() -> str:
    """The table of control messages in docs/transport.md (tests/transport/test_messages.py
    checks that the document holds exactly this, and prints it when it does not)."""
    rows = ["| kind | direction | fields | meaning |", "|---|---|---|---|"]
    for kind, cls in KINDS.items():
        fields = ", ".join(f"{name}: {_type_name(tp)}" + ("" if required else " (optional)")
                           for name, tp, required in _fields(cls)) or "-"
        meaning = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        meaning = " ".join(meaning.split())
        rows.append(f"| `{kind}` | {cls.direction} | {fields} | {meaning} |")
    return "\n".join(rows) + "\n"


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        return " or ".join("null" if a is type(None) else _type_name(a)
                           for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        inner = _fields(typing.cast(type, tp))
        return "{" + ", ".join(f"{n}: {_type_name(t)}" for n, t, _ in inner) + "}"
    return {int: "int", str: "string", bool: "bool", float: "number"}[tp]

