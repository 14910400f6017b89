"""The sender's control plane, driven over in-memory links with a manual clock: joins, the
start, arity, heartbeats, eviction, healing at any moment, release. No socket, no thread,
no sleep: each test runs in milliseconds and time moves only when it says so."""

from __future__ import annotations

import pytest

from ka.transport.errors import TransportError
from ka.transport.health import DEAD_AFTER, HEARTBEAT
from ka.transport.messages import (
    Abort,
    DropSon,
    Evict,
    Finish,
    NodeState,
    Ok,
    Outcome,
    Ping,
    Plan,
    Refused,
    Sons,
    Welcome,
)
from ka.transport.options import PROTOCOL, SendOptions
from ka.transport.receiver import SENDER_SILENCE
from ka.transport.session import PING_EVERY
from ka.transport.testing import ControlPlane, RemoteNode
from ka.transport.topology import ROOT

MB = 1 << 20


def started(n: int, **options: object) -> tuple[ControlPlane, list[RemoteNode]]:
    plane = ControlPlane(SendOptions(nodes=n, **options))  # type: ignore[arg-type]
    nodes = [plane.join(f"n{i}") for i in range(1, n + 1)]
    plane.tick()
    assert plane.session.started
    return plane, nodes


def parent_of(node: RemoteNode) -> str:
    return node.last(Plan).parent


# joining and the start --------------------------------------------------------------------
def test_the_producer_is_started_for_the_depth_of_the_tree() -> None:
    """It sizes the chunks from that depth (ka.transport.chunking)."""
    for n, arity, hops in ((1, 1, 1), (32, 1, 32), (7, 2, 3), (8, 2, 3), (15, 2, 4), (21, 4, 3)):
        plane, _ = started(n, arity=arity)
        assert plane.producer.hops == hops, (n, arity)


def test_a_join_is_welcomed_with_its_id_ring_and_session_id() -> None:
    plane = ControlPlane(SendOptions(nodes=2, ring_size=8 * MB))
    a = plane.join("a")
    welcome = a.last(Welcome)
    assert welcome.id == a.id and welcome.ring_size == 8 * MB and len(welcome.salt) == 32
    assert plane.event("joined", a).message.endswith("(1/2)")
    assert a.record.state == NodeState.WAITING


def test_another_protocol_is_refused_with_what_to_do() -> None:
    plane = ControlPlane(SendOptions(nodes=1))
    old = plane.join("old", protocol=PROTOCOL - 1)
    assert "same ka version" in old.last(Refused).reason and not plane.session.nodes


def test_the_same_node_cannot_join_twice() -> None:
    plane = ControlPlane(SendOptions(nodes=2))
    plane.join("a", address="10.1.1.1")
    twin = plane.join("a again", address="10.1.1.1")
    assert "already joined" in twin.last(Refused).reason and len(plane.session.nodes) == 1


def test_the_session_waits_for_its_nodes_then_starts_a_chain() -> None:
    plane = ControlPlane(SendOptions(nodes=3))
    a, b = plane.join("a"), plane.join("b")
    plane.tick(10.0)
    assert not plane.session.started and not a.of(Plan)
    c = plane.join("c")
    plane.tick()
    assert [parent_of(n) for n in (a, b, c)] == [ROOT, a.id, b.id]
    assert [n.last(Plan).position for n in (a, b, c)] == [1, 2, 3]
    assert plane.producer.running and plane.event("start").data["order"] == [a.id, b.id, c.id]
    # each parent is told its son and the ticket the son will show; the sender feeds a
    assert plane.relay.allowed == {a.id: a.last(Plan).ticket}
    assert a.last(Sons).sons[0].id == b.id and a.last(Sons).sons[0].ticket == b.last(Plan).ticket
    assert not c.of(Sons)


def test_tickets_differ_per_son_and_parent() -> None:
    _, nodes = started(4)
    tickets = {n.last(Plan).ticket for n in nodes}
    assert len(tickets) == 4


@pytest.mark.parametrize("arity", [2, 3, 4])
def test_arity_k_builds_a_complete_tree(arity: int) -> None:
    plane, nodes = started(13, arity=arity)
    for i, node in enumerate(nodes, start=1):
        up = (i - 1) // arity
        assert parent_of(node) == (ROOT if up == 0 else nodes[up - 1].id)
    assert len(plane.relay.allowed) == arity
    assert all(len(n.last(Sons).sons) <= arity for n in nodes if n.of(Sons))


def test_go_now_starts_with_the_nodes_that_joined() -> None:
    plane = ControlPlane(SendOptions(nodes=5))
    a = plane.join("a")
    asker = plane.go_now()
    assert asker.of(Ok) and asker.link.peer is not None and asker.link.peer.closed
    plane.tick()
    assert plane.session.started and parent_of(a) == ROOT
    assert plane.go_now().of(Refused)  # too late for that


def test_a_node_may_ask_to_start_now() -> None:
    plane = ControlPlane(SendOptions(nodes=5))
    plane.join("a")
    plane.join("b", start_now=True)
    plane.tick()
    assert plane.session.started and len(plane.session.plan.order) == 2


def test_wait_timeout_starts_with_the_minimum() -> None:
    plane = ControlPlane(SendOptions(nodes=4, min_nodes=2, wait_timeout=30.0))
    plane.join("a")
    plane.join("b")
    plane.tick(29.0)
    assert not plane.session.started
    plane.tick(1.0)
    assert plane.session.started


def test_wait_timeout_without_the_minimum_aborts_every_node() -> None:
    plane = ControlPlane(SendOptions(nodes=4, min_nodes=2, wait_timeout=30.0))
    a = plane.join("a")
    with pytest.raises(TransportError, match="only 1 of the 2"):
        plane.tick(31.0)
    assert "not enough nodes" in a.last(Abort).reason


def test_gather_starts_that_long_after_the_first_join() -> None:
    plane = ControlPlane(SendOptions(nodes=9, gather=5.0))
    plane.join("a")
    plane.tick(4.0)
    plane.join("b")
    plane.tick(0.5)
    assert not plane.session.started
    plane.tick(0.5)
    assert plane.session.started and len(plane.session.plan.order) == 2


def test_waiting_nodes_hear_a_ping_every_second() -> None:
    plane = ControlPlane(SendOptions(nodes=3))
    a = plane.join("a")
    for _ in range(40):  # the sender's loop wakes every 0.1 s
        plane.tick(0.1)
    assert len(a.of(Ping)) >= int(4.0 / PING_EVERY) - 1
    assert 3 * PING_EVERY <= SENDER_SILENCE  # a node misses three before it gives up


def test_a_node_that_leaves_before_the_start_is_forgotten() -> None:
    plane = ControlPlane(SendOptions(nodes=2))
    a, gone = plane.join("a"), plane.join("gone")
    gone.cut()
    plane.tick()  # it was the second of two: without it the session waits
    assert not plane.session.started and plane.event("left", gone)
    b = plane.join("b")
    plane.tick()
    assert [parent_of(a), parent_of(b)] == [ROOT, a.id]


# eviction and healing ------------------------------------------------------------------------
def test_a_silent_node_is_evicted_within_3_s_and_its_son_reattached() -> None:
    plane, (a, b, c) = started(3)
    plane.producer.produce(4 * MB)
    plane.run(1.0, alive=(a, b, c))
    epoch = c.last(Plan).epoch
    t0 = plane.clock()
    plane.run(3.0, alive=(a, c))  # b stops answering
    evicted = plane.event("evicted", b)
    assert evicted.time and b.record.state == NodeState.EVICTED
    assert b.record.terminal_at is not None and b.record.terminal_at - t0 <= 3.0
    assert f"no heartbeat for {DEAD_AFTER:g} s" in b.last(Evict).reason
    assert a.last(DropSon).id == b.id
    plan = c.last(Plan)
    assert plan.parent == a.id and plan.epoch > epoch
    assert a.last(Sons).sons[-1].id == c.id and a.last(Sons).sons[-1].ticket == plan.ticket
    assert plane.event("reattached", c)


def test_a_broken_connection_heals_mid_stream() -> None:
    plane, (a, b, c) = started(3)
    plane.producer.produce(8 * MB)
    a.report(8 * MB)
    b.report(6 * MB)
    c.report(2 * MB)
    plane.tick()
    b.cut()
    plane.tick()
    assert "lost contact" in str(b.record.reason)
    assert parent_of(c) == a.id and "at offset 2097152" in plane.event("reattached", c).message


def test_the_head_of_the_chain_fails_and_its_son_is_fed_by_the_sender() -> None:
    plane, (a, b) = started(2)
    a.cut()
    plane.tick()
    assert parent_of(b) == ROOT and b.id in plane.relay.allowed and a.id in plane.relay.dropped


def test_healing_after_the_end_of_the_stream() -> None:
    plane, (a, b, c) = started(3)
    plane.producer.produce(4 * MB)
    plane.producer.finish()
    a.done()
    c.report(4 * MB, ended=True)  # c has it all already: it needs no new parent
    b.report(3 * MB)
    plane.tick()
    b.cut()
    plane.tick()
    assert not plane.session.plan.order.count(b.id)
    assert len(c.of(Plan)) == 1  # not moved


def test_a_son_that_has_not_ended_is_moved_after_the_end_of_the_stream() -> None:
    plane, (a, b, c) = started(3)
    plane.producer.produce(4 * MB)
    plane.producer.finish()
    a.done()
    b.report(3 * MB)
    c.report(1 * MB)
    plane.tick()
    b.cut()
    plane.tick()
    assert parent_of(c) == a.id


def test_a_node_whose_consumer_takes_nothing_is_evicted_as_stalled() -> None:
    plane, (a, b) = started(2, stall_timeout=5.0)
    plane.producer.produce(4 * MB)
    a.report(4 * MB)
    b.report(4 * MB, consumed=MB)  # holds it, does not pass it on to its consumer
    plane.tick()
    for _ in range(30):
        a.report(4 * MB)
        b.report(4 * MB, consumed=MB)  # still answering
        plane.tick(0.25)
    assert b.record.state == NodeState.EVICTED and "no progress for 5 s" in str(b.record.reason)
    assert b.record.stalled and b.last(Evict)
    assert a.record.state == NodeState.ACTIVE


def test_only_the_deepest_stuck_node_is_blamed() -> None:
    plane, (a, b, c) = started(3, stall_timeout=5.0)
    plane.producer.produce(4 * MB)
    for _ in range(30):
        a.report(4 * MB)
        b.report(MB)  # takes nothing more from a
        c.report(MB)  # has all b has: waits for b, is not at fault
        plane.tick(0.25)
    assert b.record.state == NodeState.EVICTED
    assert c.record.state == NodeState.ACTIVE and parent_of(c) == a.id


def test_a_node_with_nothing_to_take_is_not_stalled() -> None:
    plane, (a, b) = started(2, stall_timeout=5.0)
    plane.run(10.0, alive=(a, b))  # the producer's input is slow to come: nothing to take
    plane.producer.produce(MB)
    for _ in range(8):
        a.report(MB)
        b.report(MB // 2)  # takes what a has, a chunk at a time
        plane.tick(0.5)
    b.report(MB)
    plane.tick()
    assert [a.record.state, b.record.state] == [NodeState.ACTIVE, NodeState.ACTIVE]


def test_a_message_that_has_no_place_at_the_sender_evicts_its_node() -> None:
    plane, (a, b) = started(2)
    a.send(Plan("", "", 1, 1, 1, "x"))
    plane.tick()
    assert a.record.state == NodeState.EVICTED and "protocol error" in str(a.record.reason)
    assert parent_of(b) == ROOT


def test_a_failed_producer_aborts_every_node() -> None:
    from ka.errors import KaError

    plane, (a, b) = started(2)
    plane.producer.error = KaError("the input command exited with status 2")
    with pytest.raises(KaError):
        plane.tick()
    assert "status 2" in a.last(Abort).reason and b.last(Abort)


def test_when_no_node_is_left_production_stops() -> None:
    plane, (a,) = started(1)
    a.cut()
    plane.tick()
    assert plane.producer.aborted and plane.ring.closed


def test_the_ring_floor_follows_the_slowest_live_node() -> None:
    plane, (a, b) = started(2)
    plane.producer.produce(8 * MB)
    a.report(8 * MB)
    b.report(5 * MB, consumed=3 * MB)
    plane.tick()
    assert plane.ring.floor == 3 * MB


def test_a_late_node_joins_the_tail_from_offset_0() -> None:
    plane, (a, b) = started(2)
    plane.producer.produce(MB)
    late = plane.join("late")
    assert parent_of(late) == b.id and "joined late" in plane.event("joined", late).message
    assert b.last(Sons).sons[-1].id == late.id


# the end: results and release ----------------------------------------------------------------
def test_results_say_which_copies_are_right() -> None:
    plane, (a, b, c) = started(3)
    plane.producer.produce(MB)
    plane.producer.finish("good")
    a.done()
    b.done(digest="bad")
    c.done(ok=False, reason="the consumer exited with status 1")
    plane.tick()
    assert [n.record.state for n in (a, b, c)] == [NodeState.DONE, NodeState.FAILED,
                                                   NodeState.FAILED]
    assert b.record.reason == "stream digest differs" and "status 1" in str(c.record.reason)


def test_a_parent_is_released_only_once_its_sons_have_ended() -> None:
    plane, (a, b) = started(2)
    plane.producer.produce(MB)
    plane.producer.finish()
    a.done()
    plane.tick()
    assert not a.of(Finish)
    b.done()
    plane.tick()
    assert a.of(Finish) and b.of(Finish)


def test_the_release_barrier_holds_every_waiting_node_until_all_are_done() -> None:
    plane = ControlPlane(SendOptions(nodes=3))
    nodes = [plane.join(f"n{i}", wait_release=True) for i in range(3)]
    plane.tick()
    plane.producer.produce(MB)
    plane.producer.finish()
    for node in nodes[:2]:
        node.done()
    plane.tick(1.0)
    assert not any(n.of(Finish) for n in nodes)
    nodes[2].done()
    plane.tick()
    assert all(n.of(Finish) for n in nodes)


def test_staggered_release_lets_one_node_go_per_delay_in_order_of_completion() -> None:
    plane = ControlPlane(SendOptions(nodes=3, release_delay=2.0))
    a, b, c = (plane.join(n, wait_release=True) for n in "abc")
    plane.tick()
    plane.producer.produce(MB)
    plane.producer.finish()
    released: list[tuple[float, str | None]] = []
    finishing = [c, a, b]
    for _ in range(60):
        if finishing:
            finishing.pop(0).done()
        for node in (a, b, c):
            node.report(MB, ended=True)  # finished nodes still answer until released
        seen = len(plane.events)
        plane.tick(0.1)
        released += [(plane.clock(), e.node) for e in plane.events[seen:]
                     if e.kind == "released"]
    assert [node for _, node in released] == [c.id, a.id, b.id]
    gaps = [t2 - t1 for (t1, _), (t2, _) in zip(released, released[1:], strict=False)]
    assert all(gap >= 2.0 - 1e-6 for gap in gaps)


def test_the_session_ends_with_a_report_of_every_node() -> None:
    plane, (a, b, c) = started(3)
    plane.producer.produce(MB)
    b.cut()
    plane.tick()
    plane.producer.finish()
    a.done()
    c.done()
    report = plane.run(5.0)
    assert report is not None
    assert [n.state for n in report.nodes] == [Outcome.OK, Outcome.EVICTED, Outcome.OK]
    assert report.nodes[0].digest_ok and not report.nodes[1].digest_ok
    assert not report.ok and report.bytes == MB


def test_a_pause_of_the_sender_evicts_nobody_whose_reports_waited() -> None:
    plane, nodes = started(5)
    plane.producer.produce(MB)
    plane.run(1.0, alive=tuple(nodes))
    for _ in range(10):  # the sender's loop does not run for 4 s; the nodes report on
        plane.clock.advance(HEARTBEAT)
        for node in nodes:
            node.report(MB)
    plane.tick()
    assert all(n.record.state == NodeState.ACTIVE for n in nodes)
    assert "evicted" not in plane.kinds()


def test_a_pause_of_the_sender_itself_is_not_the_nodes_silence() -> None:
    # The whole sender process was starved or stopped for 4 s: not even its readers ran, so
    # nothing from the nodes waits in its inbox when its loop runs again.
    plane, nodes = started(5)
    plane.producer.produce(MB)
    plane.run(1.0, alive=tuple(nodes))
    plane.clock.advance(4.0)
    plane.tick()
    assert all(n.record.state == NodeState.ACTIVE for n in nodes)
    assert "evicted" not in plane.kinds()
    assert any("paused 4.0 s" in e.message for e in plane.events)
    # A node that stays silent after the pause is still evicted within the usual time.
    plane.run(3.0, alive=tuple(nodes[1:]))
    assert nodes[0].record.state == NodeState.EVICTED
    assert all(n.record.state == NodeState.ACTIVE for n in nodes[1:])


def test_two_stragglers_are_both_moved_to_the_tail() -> None:
    """n2 and n4 at a quarter of the rate in a chain of six: each is moved once, the second
    under the first (the tail is slow already; the fast nodes no longer wait for either)."""
    plane, nodes = started(6, ring_size=1024 * MB)
    by_id = {n.id: n for n in nodes}
    rate = {n.id: (3 if n.name in ("n2", "n4") else 12) * MB for n in nodes}
    got = dict.fromkeys(by_id, 0)
    for _ in range(100):  # 10 s in steps of 0.1 s
        plane.producer.produce(2 * MB)
        plan = plane.session.plan
        for n in plan.order:  # parents first
            up = plan.parent(n)
            have = plane.producer.raw if up == ROOT else got[up]
            got[n] = min(have, got[n] + int(rate[n] * 0.1))
            by_id[n].report(got[n])
        plane.tick(0.1)
    moved = [e.node for e in plane.events if e.kind == "moved"]
    assert moved == [by_id_of(nodes, "n2"), by_id_of(nodes, "n4")]
    plan = plane.session.plan
    assert plan.order[-2:] == (by_id_of(nodes, "n2"), by_id_of(nodes, "n4"))
    assert plan.parent(by_id_of(nodes, "n4")) == by_id_of(nodes, "n2")


def by_id_of(nodes: list[RemoteNode], name: str) -> str:
    return next(n.id for n in nodes if n.name == name)
