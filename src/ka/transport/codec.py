"""Typed messages on the wire: frozen dataclasses as JSON objects, validated once on receipt.

A `Catalogue` is one protocol's set of message kinds (the control plane's in
ka.transport.messages, the node status service's in ka.transport.status_messages). On the wire
a message is one JSON object, its kind under "t" and its fields by name; `Catalogue.decode`
validates it when it arrives: an unknown kind, a missing or unknown field or a value of the
wrong type raises MessageError, so the code that acts on a message never checks a field again.
A catalogue also writes its own table for the documentation (`reference`).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from ka.transport.errors import ProtocolError


class MessageError(ProtocolError):
    """A message that is not one of ours: unknown kind, a field missing or unknown, or a
    value of the wrong type."""


class Message:
    """Base of every message; `kind` is its word on the wire."""

    kind: ClassVar[str]
    direction: ClassVar[str]  # who sends it, for the documentation


M = TypeVar("M", bound=type[Message])
Check = Callable[[Any], Any]


class Catalogue:
    """The message kinds of one protocol: registered with `kind`, read back with `decode`."""

    def __init__(self, what: str) -> None:
        self.what = what  # "control", "status": named in errors
        self.kinds: dict[str, type[Message]] = {}

    def kind(self, kind: str, direction: str) -> Callable[[M], M]:
        def register(cls: M) -> M:
            assert kind not in self.kinds, kind
            cls.kind, cls.direction = kind, direction
            self.kinds[kind] = cls
            return cls
        return register

    def decode(self, payload: bytes) -> Message:
        try:
            raw = json.loads(payload)
        except ValueError as e:
            raise MessageError(f"malformed {self.what} message") from e
        if not isinstance(raw, dict) or not isinstance(raw.get("t"), str):
            raise MessageError(f"malformed {self.what} message")
        cls = self.kinds.get(raw.pop("t"))
        if cls is None:
            raise MessageError(f"unknown {self.what} message")
        return typing.cast(Message, _builder(cls)(raw))

    def reference(self) -> str:
        """The table of this catalogue's messages, as docs/transport.md holds it."""
        rows = ["| kind | direction | fields | meaning |", "|---|---|---|---|"]
        for kind, cls in self.kinds.items():
            fields = ", ".join(f"{name}: {_type_name(tp)}" + ("" if required else " (optional)")
                               for name, tp, required in _fields(cls)) or "-"
            meaning = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            meaning = " ".join(meaning.split())
            rows.append(f"| `{kind}` | {cls.direction} | {fields} | {meaning} |")
        return "\n".join(rows) + "\n"


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


# Each kind's fields are compiled once into checkers: the sender decodes every heartbeat of
# every node, and walking the type hints per message cost more than the JSON itself.
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
