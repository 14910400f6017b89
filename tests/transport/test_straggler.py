"""The straggler policy on made-up reports: who is moved, when, and who never is."""

from __future__ import annotations

from ka.transport.straggler import HOLD, MIN_GAIN, Move, StragglerWatch
from ka.transport.topology import ChainPlan

MB = 1_000_000
PLAN = ChainPlan.build(["n1", "n2", "n3", "n4"], 1)


class Reports:
    """Position reports every `step` seconds, as the sender sees them, into one watch."""

    def __init__(self, plan: ChainPlan = PLAN, step: float = 0.4) -> None:
        self.watch = StragglerWatch()
        self.plan, self.step, self.now = plan, step, 0.0
        self.received = dict.fromkeys(plan.order, 0)
        self.ended: list[str] = []

    def run(self, rates: dict[str, float], seconds: float) -> list[Move]:
        """Each node receives at its rate (bytes/s); the moves asked for on the way, each
        taken at once as the session does."""
        moves = []
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = round(self.now + self.step, 6)
            for node, rate in rates.items():
                self.received[node] += int(rate * self.step)
                self.watch.observe(node, self.now, self.received[node])
            for move in self.watch.due(self.plan, self.received, self.ended, self.now):
                moves.append(move)
                self.watch.moved.add(move.node)
        return moves


QUARTER = {"n1": 12 * MB, "n2": 3 * MB, "n3": 3 * MB, "n4": 3 * MB}


def test_a_node_at_a_quarter_of_its_parent_is_moved_after_the_hold() -> None:
    r = Reports()
    assert r.run(QUARTER, 0.8 + HOLD - 0.4) == []  # measured, but not slow long enough
    moves = r.run(QUARTER, 1.2)
    assert [(m.node, m.parent) for m in moves] == [("n2", "n1")]  # not its sons
    assert abs(moves[0].rate - 3 * MB) < 0.1 * MB
    assert abs(moves[0].parent_rate - 12 * MB) < 0.1 * MB
    assert r.run(QUARTER, 10.0) == []  # at most once


def test_equal_rates_and_a_node_a_little_slower_stay() -> None:
    assert Reports().run({n: 12 * MB for n in PLAN.order}, 10.0) == []
    assert Reports().run({"n1": 12 * MB, "n2": 7 * MB, "n3": 7 * MB, "n4": 7 * MB},
                         10.0) == []  # above half its parent's rate


def test_a_dip_shorter_than_the_hold_is_forgiven() -> None:
    r = Reports()
    assert r.run({n: 12 * MB for n in PLAN.order}, 3.0) == []
    assert r.run({"n1": 12 * MB, "n2": 1 * MB, "n3": 1 * MB, "n4": 1 * MB}, 0.4) == []
    assert r.run({n: 12 * MB for n in PLAN.order}, 5.0) == []


def test_a_son_of_the_sender_and_a_leaf_are_never_judged() -> None:
    # n1 is the sender's son (nothing to compare it with); n4 is the tail: slow, but
    # moving it would free no one.
    r = Reports()
    assert r.run({"n1": 1 * MB, "n2": 1 * MB, "n3": 12 * MB, "n4": 1 * MB}, 10.0) == []


def test_a_node_that_ended_or_whose_parent_ended_stays() -> None:
    r = Reports()
    r.ended = ["n2"]
    assert r.run(QUARTER, 10.0) == []
    r = Reports()
    r.ended = ["n1"]  # its parent has the whole stream: its rate says nothing any more
    assert r.run(QUARTER, 10.0) == []


def test_a_parent_that_gains_little_says_nothing() -> None:
    """A producer that trickles: the son's share of almost nothing is no evidence."""
    slow = MIN_GAIN / 2
    assert Reports().run({"n1": slow, "n2": slow / 10, "n3": slow / 10, "n4": slow / 10},
                         10.0) == []


def test_a_node_level_with_its_parent_is_not_slow() -> None:
    """It holds all its parent has: it goes as fast as it is fed."""
    r = Reports()
    r.received = dict.fromkeys(PLAN.order, 50 * MB)
    r.received["n1"] = r.received["n2"] = 10 * MB
    assert r.run({"n1": 12 * MB, "n2": 12 * MB, "n3": 3 * MB, "n4": 3 * MB}, 5.0) == []


def test_a_new_parent_is_measured_afresh() -> None:
    r = Reports()
    assert r.run(QUARTER, 0.8 + HOLD - 0.4) == []
    r.plan = ChainPlan.build(["n1", "n3", "n2", "n4"], 1)  # n2 now under n3
    r.received["n3"] = r.received["n1"]
    assert r.run({"n1": 12 * MB, "n3": 12 * MB, "n2": 3 * MB, "n4": 3 * MB}, 0.4) == []
    # Measured again from the change: a window, then the hold.
    moves = r.run({"n1": 12 * MB, "n3": 12 * MB, "n2": 3 * MB, "n4": 3 * MB}, 0.8 + HOLD)
    assert [(m.node, m.parent) for m in moves] == [("n2", "n3")]
