from __future__ import annotations

from ka.transport.health import (
    DEAD_AFTER,
    Progress,
    complete_subtrees,
    gate_floor,
    is_dead,
    stalled,
)
from ka.transport.topology import ChainPlan


def chain(n: int) -> ChainPlan:
    return ChainPlan.build([f"n{i}" for i in range(1, n + 1)], 1)


def progress(received: int, consumed: int, since: float = 0.0) -> Progress:
    p = Progress(since)
    p.update(since, received, consumed, False)
    return p


def test_dead_after_silence() -> None:
    p = Progress(0.0)
    assert not is_dead(p, DEAD_AFTER)
    assert is_dead(p, DEAD_AFTER + 0.01)
    p.update(2.0, 0, 0, False)
    assert not is_dead(p, 3.0)


def test_stuck_consumer_is_evicted_not_the_starved_nodes_below() -> None:
    plan = chain(3)
    prog = {"n1": progress(100, 100), "n2": progress(80, 20), "n3": progress(80, 80)}
    assert stalled(plan, prog, produced=100, now=10.0, stall_timeout=5.0) == ["n2"]


def test_nobody_stalls_while_waiting_for_a_slow_producer() -> None:
    plan = chain(3)
    prog = {n: progress(100, 100) for n in plan.order}
    assert stalled(plan, prog, produced=100, now=60.0, stall_timeout=5.0) == []


def test_progress_resets_the_clock() -> None:
    plan = chain(1)
    p = progress(100, 20)
    p.update(8.0, 100, 30, False)
    assert stalled(plan, {"n1": p}, produced=100, now=10.0, stall_timeout=5.0) == []
    assert stalled(plan, {"n1": p}, produced=100, now=13.5, stall_timeout=5.0) == ["n1"]


def test_link_stall_blames_only_the_deepest() -> None:
    plan = chain(3)
    prog = {"n1": progress(100, 100), "n2": progress(60, 60), "n3": progress(40, 40)}
    assert stalled(plan, prog, produced=100, now=1.0, stall_timeout=5.0) == []
    assert stalled(plan, prog, produced=100, now=10.0, stall_timeout=5.0) == ["n3"]


def test_a_node_deep_in_a_slow_chain_waits_for_its_first_data_without_stalling() -> None:
    """At 10 Mbit/s a 256 KiB chunk takes 0.2 s per hop: the 26th node of a chain sees its
    first byte 5 s after the start. Its clock starts when its parent holds data, not before."""
    plan = chain(2)
    prog = {"n1": progress(0, 0), "n2": progress(0, 0)}
    for now in (1.0, 2.0, 3.0, 4.0):
        assert stalled(plan, prog, produced=100, now=now, stall_timeout=5.0) == []
    prog["n1"].update(4.5, 100, 0, False)  # the parent's first chunk; its consumer not yet
    assert stalled(plan, prog, produced=100, now=4.6, stall_timeout=5.0) == []
    assert stalled(plan, prog, produced=100, now=9.0, stall_timeout=5.0) == []
    prog["n1"].update(9.0, 100, 100, False)
    # The son still has nothing 5 s after its parent had the chunk: that is a stall.
    assert stalled(plan, prog, produced=100, now=9.7, stall_timeout=5.0) == ["n2"]


def test_a_consumer_is_timed_from_its_first_data() -> None:
    plan = chain(1)
    p = progress(0, 0)
    p.update(4.9, 100, 0, False)
    assert stalled(plan, {"n1": p}, produced=100, now=5.0, stall_timeout=5.0) == []
    assert stalled(plan, {"n1": p}, produced=100, now=9.8, stall_timeout=5.0) == []
    assert stalled(plan, {"n1": p}, produced=100, now=10.0, stall_timeout=5.0) == ["n1"]


def test_gate_floor_is_the_slowest_consumer() -> None:
    assert gate_floor([progress(10, 5), progress(10, 9)]) == 5
    assert gate_floor([]) is None


def test_complete_subtrees() -> None:
    plan = chain(3)
    prog = {n: progress(10, 10) for n in plan.order}
    assert complete_subtrees(plan, prog) == {"n3"}  # a leaf has nobody below it
    prog["n3"].ended = True
    assert complete_subtrees(plan, prog) == {"n2", "n3"}
    prog["n2"].ended = True
    assert complete_subtrees(plan, prog) == {"n1", "n2", "n3"}


def test_complete_subtrees_in_a_tree_waits_for_every_branch() -> None:
    plan = ChainPlan.build([f"n{i}" for i in range(1, 8)], arity=2)
    prog = {n: progress(10, 10) for n in plan.order}
    for p in prog.values():
        p.ended = True
    prog["n7"].ended = False  # under n3, under n1
    assert complete_subtrees(plan, prog) == {"n2", "n4", "n5", "n6", "n7"}


def test_stalled_is_linear_in_a_long_chain_whose_whole_link_waits() -> None:
    plan = chain(20_000)
    prog = {n: progress(0, 0) for n in plan.order}  # nothing reached anyone for 10 s
    assert stalled(plan, prog, produced=100, now=1.0, stall_timeout=5.0) == []
    assert stalled(plan, prog, produced=100, now=10.0, stall_timeout=5.0) == ["n1"]
