"""Healing decisions, from the sender's view of every node. Pure: time is passed in.

A node is *dead* when nothing came from it for DEAD_AFTER seconds (nodes send a report every
HEARTBEAT seconds, so a dead or stopped peer is detected within 3 s). A node is *stalled* when
it is alive but makes no progress for `stall_timeout` although data is waiting for it: either
its consumer does not take what the node already holds, or it does not receive what its
parent already has (then only the deepest such node is to blame, as it holds up its parent).
The clock runs from the moment the data was waiting, not from the start: deep in a long chain
at a low rate, the first chunk reaches a node seconds after the start (one chunk's transfer
time per hop), and that node was waiting, not stalled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ka.transport.topology import ROOT, ChainPlan

HEARTBEAT = 0.4
DEAD_AFTER = 2.3  # worst case: one heartbeat period + this + a tick < 3 s


@dataclass
class Progress:
    """The sender's latest knowledge of one node (updated from its reports)."""

    since: float
    received: int = 0
    consumed: int = 0
    ended: bool = False
    last_seen: float = 0.0
    received_at: float = 0.0
    consumed_at: float = 0.0
    # Since when the parent has held data this node lacks / this node has held data its
    # consumer has not taken (None: nothing waiting), as seen by the sender.
    link_waiting: float | None = None
    feed_waiting: float | None = None

    def __post_init__(self) -> None:
        self.last_seen = self.received_at = self.consumed_at = self.since

    def update(self, now: float, received: int, consumed: int, ended: bool) -> None:
        self.last_seen = now
        if received > self.received:
            self.received, self.received_at = received, now
        if consumed > self.consumed:
            self.consumed, self.consumed_at = consumed, now
        self.ended = self.ended or ended
        self.feed_waiting = _waiting(self.feed_waiting, self.consumed < self.received, now)

    def offered(self, available: int, now: float) -> None:
        """The parent holds `available` bytes of the stream (its latest report)."""
        self.link_waiting = _waiting(self.link_waiting, self.received < available, now)

    def restart_clock(self, now: float) -> None:
        """A node that just got a new parent is given a fresh stall allowance."""
        self.received_at = self.consumed_at = now


def is_dead(p: Progress, now: float, dead_after: float = DEAD_AFTER) -> bool:
    return now - p.last_seen > dead_after


def _waiting(since: float | None, behind: bool, now: float) -> float | None:
    if not behind:
        return None
    return now if since is None else since


def consumer_stuck(p: Progress, now: float, stall_timeout: float) -> bool:
    if p.consumed >= p.received or p.feed_waiting is None:
        return False
    return now - max(p.consumed_at, p.feed_waiting) >= stall_timeout


def link_stuck(p: Progress, available: int, now: float, stall_timeout: float) -> bool:
    p.offered(available, now)
    if p.link_waiting is None:
        return False
    return now - max(p.received_at, p.link_waiting) >= stall_timeout


def stalled(
    plan: ChainPlan,
    progress: Mapping[str, Progress],
    produced: int,
    now: float,
    stall_timeout: float,
) -> list[str]:
    """Nodes to evict for lack of progress (and, on the way, each node's link clock: call it
    on every check, as the session does)."""
    def available(node: str) -> int:
        up = plan.parent(node)
        return produced if up == ROOT else progress[up].received

    stuck_consumer = {
        n for n in plan.order if n in progress and consumer_stuck(progress[n], now, stall_timeout)
    }
    stuck_link = {
        n for n in plan.order
        if n in progress and link_stuck(progress[n], available(n), now, stall_timeout)
    }
    # Whether anything below a node is stuck, from the leaves up (a parent precedes its sons
    # in the order): one pass, where asking each stuck node for its descendants was
    # quadratic when the whole chain waits (the sender's own link down).
    stuck = stuck_consumer | stuck_link
    stuck_below: set[str] = set()
    for n in reversed(plan.order):
        if n in stuck or n in stuck_below:
            stuck_below.add(plan.parent(n))
    deepest = {n for n in stuck_link - stuck_consumer if n not in stuck_below}
    return [n for n in plan.order if n in stuck_consumer or n in deepest]


def gate_floor(progress: Iterable[Progress]) -> int | None:
    """The lowest position any live node still needs; None when no node is left."""
    positions = [p.consumed for p in progress]
    return min(positions) if positions else None


def complete_subtrees(plan: ChainPlan, progress: Mapping[str, Progress]) -> set[str]:
    """Every placed node none of whose descendants may still need data from it: one pass
    from the leaves up (asking each node for its descendants is quadratic in a chain)."""
    waiting: set[str] = set()  # nodes with a descendant that has not ended
    for n in reversed(plan.order):
        if n in waiting or (n in progress and not progress[n].ended):
            waiting.add(plan.parent(n))
    return {n for n in plan.order if n not in waiting}
