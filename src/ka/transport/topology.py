"""ChainPlan: who feeds whom. Pure: ordering, tree building and healing decisions.

The sender is the root (`ROOT`). Nodes are placed in order as a complete tree of arity K
(arity 1 is the chain): the i-th node (1-based) hangs under node (i - 1) // K, 0 being the
root, which keeps the tree as shallow as possible. When a node leaves, its sons re-attach to
its parent, which is by construction its nearest live ancestor.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

ROOT = ""


@dataclass(frozen=True)
class Member:
    id: str  # "addr:port" of the node's data listener
    address: str
    port: int
    name: str | None = None


def address_key(member: Member) -> tuple[int, int, int]:
    """Numeric order: IP version, then the address as an integer, then the port."""
    try:
        ip = ipaddress.ip_address(member.address)
        return (ip.version, int(ip), member.port)
    except ValueError:
        return (99, 0, member.port)


def order_members(members: Iterable[Member], explicit: Sequence[str] | None = None) -> list[Member]:
    """Numeric address order, or the explicit list first (matched by id, address or name)."""
    ordered = sorted(members, key=address_key)
    if not explicit:
        return ordered
    rank: dict[str, int] = {}
    for i, wanted in enumerate(explicit):
        rank.setdefault(wanted, i)
    def place(m: Member) -> int:
        hits = [rank[k] for k in (m.id, m.address, m.name) if k is not None and k in rank]
        return min(hits) if hits else len(explicit)
    return sorted(ordered, key=place)  # stable: unlisted nodes keep numeric order


@dataclass(frozen=True)
class ChainPlan:
    arity: int
    order: tuple[str, ...]
    parents: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, order: Sequence[str], arity: int = 1) -> ChainPlan:
        if arity < 1:
            raise ValueError("arity must be at least 1")
        if len(set(order)) != len(order) or ROOT in order:
            raise ValueError("node ids must be unique and non-empty")
        parents = {}
        for i, node in enumerate(order, start=1):
            up = (i - 1) // arity
            parents[node] = ROOT if up == 0 else order[up - 1]
        return cls(arity, tuple(order), parents)

    def parent(self, node: str) -> str:
        return self.parents[node]

    @cached_property
    def _sons(self) -> dict[str, tuple[str, ...]]:
        # Built once per plan: asking every node for its sons by scanning the order made
        # the start and every heal quadratic in N (1e8 steps at 10,000 nodes).
        sons: dict[str, list[str]] = {}
        for n in self.order:
            sons.setdefault(self.parents[n], []).append(n)
        return {p: tuple(s) for p, s in sons.items()}

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.order, start=1)}

    def sons(self, node: str) -> tuple[str, ...]:
        return self._sons.get(node, ())

    def position(self, node: str) -> int:
        return self._positions[node]

    def ancestors(self, node: str) -> tuple[str, ...]:
        out = []
        while node != ROOT:
            node = self.parents[node]
            out.append(node)
        return tuple(out)

    def descendants(self, node: str) -> tuple[str, ...]:
        out: list[str] = []
        frontier = [node]
        while frontier:
            sons = [s for n in frontier for s in self.sons(n)]
            out.extend(sons)
            frontier = sons
        return tuple(out)

    def depth(self, node: str) -> int:
        return len(self.ancestors(node))

    def with_tail(self, node: str, eligible: Callable[[str], bool] = lambda n: True) -> ChainPlan:
        """The plan with a late node added where the tree is shallowest (a chain's tail),
        under an eligible parent (one still running); the root when none has a free slot."""
        if node in self.parents or node == ROOT:
            raise ValueError(f"{node!r} is already placed")
        up = next((n for n in (ROOT, *self.order)
                   if (n == ROOT or eligible(n)) and len(self.sons(n)) < self.arity), ROOT)
        return ChainPlan(self.arity, (*self.order, node), {**self.parents, node: up})

    def without(self, gone: str) -> tuple[ChainPlan, dict[str, str]]:
        """The plan once `gone` has left, and the moves: orphan son -> its new parent."""
        if gone not in self.parents:
            return self, {}
        up = self.parents[gone]
        moves = {son: up for son in self.sons(gone)}
        parents = {n: (up if p == gone else p) for n, p in self.parents.items() if n != gone}
        order = tuple(n for n in self.order if n != gone)
        return ChainPlan(self.arity, order, parents), moves
