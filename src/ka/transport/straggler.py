"""Stragglers: which node to move to the tail of the chain. Pure: time is passed in.

In a chain every node after a slow one goes at its pace. The sender measures each hop's rate
from the nodes' position reports: the rate at which a node receives against the rate at which
its parent receives over the same last WINDOW seconds. The policy, in full:

- A node is *slow* when it receives at less than SLOW_SHARE of its parent's rate, its parent
  gained at least MIN_GAIN bytes over the window (a parent waiting for the producer says
  nothing about its son), and the node is behind its parent.
- It is moved when it stays slow in every check for HOLD seconds: its sons re-attach to its
  parent at their exact offsets (the healing path), and it re-attaches at the tail of the
  chain at its own offset. A node is moved at most once per session.
- Not judged: a son of the sender (nothing to compare it with: a slow first node and a slow
  network look the same), a node without sons (moving it frees no one), a node whose parent
  changed within the window (its rates are of the old link).

Seen only while the parent can run ahead of its slow son, i.e. until the parent's retention
ring is full of what the son has not taken: `--ring-size` / (parent's rate - son's rate),
3.6 s for the default 32 MiB at 100 Mbit/s against 25. After that every node goes at the
straggler's pace and the rates no longer tell it apart; and after the move too, the fast nodes
can run at most `--ring-size` ahead of it (the sender keeps every byte a live node still needs).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from ka.transport.topology import ROOT, ChainPlan

SLOW_SHARE = 0.5
WINDOW = 1.0
HOLD = 0.5
MIN_GAIN = 1024 * 1024


@dataclass(frozen=True)
class Move:
    node: str
    rate: float  # bytes/s the node received over the window
    parent: str
    parent_rate: float


@dataclass
class _Meter:
    parent: str | None = None
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    slow_since: float | None = None

    def rate(self, now: float) -> tuple[float, int] | None:
        """(bytes/s, bytes) over the last WINDOW, or None with less than 0.8 WINDOW seen."""
        if not self.samples:
            return None
        t0, r0 = self.samples[0]
        t1, r1 = self.samples[-1]
        if now - t0 < 0.8 * WINDOW - 1e-6 or t1 <= t0:
            return None
        return (r1 - r0) / (t1 - t0), r1 - r0


class StragglerWatch:
    """Rates of every node from its reports, and the moves the policy asks for."""

    def __init__(self) -> None:
        self._meters: dict[str, _Meter] = {}
        self.moved: set[str] = set()

    def observe(self, node: str, now: float, received: int) -> None:
        samples = self._meters.setdefault(node, _Meter()).samples
        samples.append((now, received))
        # Keep one sample older than the window, so a rate spans the whole window.
        while len(samples) > 2 and samples[1][0] <= now - WINDOW:
            samples.popleft()

    def forget(self, node: str) -> None:
        self._meters.pop(node, None)

    def rate(self, node: str, now: float) -> float | None:
        meter = self._meters.get(node)
        measured = meter.rate(now) if meter else None
        return measured[0] if measured else None

    def due(self, plan: ChainPlan, received: dict[str, int], ended: Iterable[str],
            now: float) -> list[Move]:
        """Nodes to move now, shallowest first; `received` holds every node of the plan."""
        done = set(ended)
        parents = set(plan.parents.values())  # plan.sons() is linear: once, not per node
        moves = []
        for node in plan.order:
            meter = self._meters.setdefault(node, _Meter())
            parent = plan.parent(node)
            if meter.parent != parent:  # new link: measure it afresh
                meter.parent, meter.slow_since = parent, None
                meter.samples = deque(s for s in meter.samples if s[0] >= now)
            if node not in parents or not self._slow(plan, node, parent, received, done, now):
                meter.slow_since = None
                continue
            if meter.slow_since is None:
                meter.slow_since = now
            if now - meter.slow_since >= HOLD:
                rate = self.rate(node, now) or 0.0
                moves.append(Move(node, rate, parent, self.rate(parent, now) or 0.0))
        return moves

    def _slow(self, plan: ChainPlan, node: str, parent: str, received: dict[str, int],
              done: set[str], now: float) -> bool:
        if (parent == ROOT or node in self.moved or node in done or parent in done
                or received[node] >= received[parent]):
            return False
        mine, theirs = self._meters[node], self._meters.get(parent)
        if theirs is None or theirs.parent != plan.parent(parent):
            return False
        a, b = mine.rate(now), theirs.rate(now)
        if a is None or b is None or b[1] < MIN_GAIN:
            return False
        return a[0] < SLOW_SHARE * b[0]
