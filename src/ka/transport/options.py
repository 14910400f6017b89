"""The transport's public option and report types (see docs in ka.transport)."""

from __future__ import annotations

import builtins
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ka.ports import SESSION_PORT as DEFAULT_PORT
from ka.transport.messages import Outcome

PROTOCOL = 4  # bump on any incompatible change of the wire format
# 2: frame MACs keyed per session, the session id in END, attach tickets
CHUNK_SIZE = 256 * 1024
MIN_CHUNK, MAX_CHUNK = 4 * 1024, 4 * 1024 * 1024


@dataclass(frozen=True)
class SendOptions:
    nodes: int
    session: str | None = None
    port: int = DEFAULT_PORT
    arity: int = 1
    key: bytes | None = None
    compress: str | None = None
    release_delay: float | None = None
    min_nodes: int | None = None
    wait_timeout: float | None = None
    gather: float | None = None  # start this long after the first node joined
    stall_timeout: float = 5.0
    ring_size: int = 32 * 1024 * 1024
    # Every hop stores and checks a whole chunk before passing it on: a chain of N nodes
    # starts N chunk-times late (docs/transport.md, Chunk size). None: chosen from the
    # stream's length and the tree's depth (ka.transport.chunking), at most CHUNK_SIZE.
    chunk_size: int | None = None
    # Move a node much slower than its parent to the tail (ka.transport.straggler).
    move_stragglers: bool = True
    node_order: tuple[str, ...] | None = None
    bind: str = "0.0.0.0"
    encrypt: bool | None = None  # None: encrypt the payload whenever there is a key
    identity: bytes | None = None  # the golden's Ed25519 private key: signs every stream's end

    @property
    def largest_chunk(self) -> int:
        """No chunk of the session is bigger: what the ring's margins are sized for."""
        return CHUNK_SIZE if self.chunk_size is None else self.chunk_size


@dataclass(frozen=True)
class ReceiveOptions:
    session: str | None = None
    host: str | None = None
    port: int = DEFAULT_PORT
    key: bytes | None = None
    wait_release: bool = False
    go_now: bool = False  # only tell the sender to start now; take no data
    start_now: bool = False  # join as a node and tell the sender to start now
    find_timeout: float = 30.0
    name: str | None = None
    attachment: bytes | None = None
    discovery_address: str = "255.255.255.255"
    golden_key: bytes | None = None  # the pinned Ed25519 public key of the golden identity


@dataclass(frozen=True)
class NodeReport:
    node: str
    name: str | None
    position: int
    state: Outcome
    bytes: int
    seconds: float
    digest_ok: bool
    consumer_status: int | None
    reason: str | None
    attachment: builtins.bytes | None = None
    # Evicted for making no progress while it still answered: the node itself runs on
    # (it was told), so a workflow's next session can expect it, unlike a lost node.
    stalled: bool = False
    moved: str | None = None  # moved to the tail of the chain, and why

    @property
    def still_running(self) -> bool:
        """The node's process goes on after this session (finished, failed, or stalled)."""
        return self.state != Outcome.EVICTED or self.stalled

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "name": self.name,
            "position": self.position,
            "state": self.state,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.mb_per_s, 2),
            "digest_ok": self.digest_ok,
            "consumer_status": self.consumer_status,
            "reason": self.reason,
            "stalled": self.stalled,
            "moved": self.moved,
        }


@dataclass(frozen=True)
class SessionReport:
    nodes: tuple[NodeReport, ...]
    bytes: int
    seconds: float
    drain_seconds: float
    digest: str

    @property
    def ok(self) -> bool:
        return bool(self.nodes) and all(n.state == Outcome.OK for n in self.nodes)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "drain_seconds": round(self.drain_seconds, 3),
            "digest": self.digest,
            "nodes": [n.to_json() for n in self.nodes],
        }


@dataclass(frozen=True)
class ReceiveReport:
    bytes: int
    seconds: float
    digest: str
    consumer_status: int
    position: int
    sender: str


@dataclass(frozen=True)
class Event:
    """Something worth showing: `kind` is a stable word, `message` a line for people."""

    kind: str
    message: str
    node: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.kind, "time": round(self.time, 3)}
        if self.node is not None:
            out["node"] = self.node
        out["message"] = self.message
        out.update(self.data)
        return out
