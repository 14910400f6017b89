from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ka.transport.topology import ROOT, ChainPlan, Member, order_members


def ids(n: int) -> list[str]:
    return [f"n{i}" for i in range(1, n + 1)]


def test_chain() -> None:
    plan = ChainPlan.build(ids(4), 1)
    assert [plan.parent(n) for n in ids(4)] == [ROOT, "n1", "n2", "n3"]
    assert plan.descendants("n2") == ("n3", "n4")
    assert plan.ancestors("n3") == ("n2", "n1", ROOT)


def test_arity_two_like_the_original() -> None:
    plan = ChainPlan.build(ids(3), 2)
    assert plan.sons(ROOT) == ("n1", "n2")
    assert plan.sons("n1") == ("n3",)


def test_numeric_address_order_not_byte_order() -> None:
    members = [Member(f"192.0.2.{x}:1", f"192.0.2.{x}", 1) for x in (200, 1, 10, 2)]
    members.append(Member("10.0.0.9:1", "10.0.0.9", 1))
    got = [m.address for m in order_members(members)]
    assert got == ["10.0.0.9", "192.0.2.1", "192.0.2.2", "192.0.2.10", "192.0.2.200"]


def test_same_address_ordered_by_port() -> None:
    members = [Member(f"127.0.0.1:{p}", "127.0.0.1", p) for p in (40000, 3000, 5000)]
    assert [m.port for m in order_members(members)] == [3000, 5000, 40000]


def test_explicit_order_by_address_id_or_name_then_the_rest() -> None:
    members = [
        Member("10.0.0.1:5", "10.0.0.1", 5, "alpha"),
        Member("10.0.0.2:5", "10.0.0.2", 5, "beta"),
        Member("10.0.0.3:5", "10.0.0.3", 5, "gamma"),
        Member("10.0.0.4:5", "10.0.0.4", 5, "delta"),
    ]
    got = order_members(members, ("gamma", "10.0.0.4", "10.0.0.2:5"))
    assert [m.name for m in got] == ["gamma", "delta", "beta", "alpha"]


def test_middle_node_leaves_chain() -> None:
    plan, moves = ChainPlan.build(ids(4), 1).without("n2")
    assert moves == {"n3": "n1"}
    assert plan.order == ("n1", "n3", "n4") and plan.parent("n4") == "n3"


def test_inner_node_of_tree_leaves() -> None:
    plan = ChainPlan.build(ids(6), 2)  # root -> n1, n2; n1 -> n3, n4; n2 -> n5, n6
    after, moves = plan.without("n1")
    assert moves == {"n3": ROOT, "n4": ROOT}
    assert set(after.sons(ROOT)) == {"n2", "n3", "n4"}


@given(st.integers(1, 40), st.integers(1, 5), st.data())
def test_healing_keeps_a_tree_and_reattaches_to_the_nearest_live_ancestor(
    n: int, arity: int, data: st.DataObject
) -> None:
    plan = ChainPlan.build(ids(n), arity)
    for node in plan.order:
        assert len(plan.sons(node)) <= arity
        assert plan.depth(node) <= n
    alive = set(plan.order)
    for _ in range(data.draw(st.integers(0, n))):
        gone = data.draw(st.sampled_from(sorted(alive)))
        before = plan
        plan, moves = plan.without(gone)
        alive.discard(gone)
        for son, up in moves.items():
            live_ancestors = [a for a in before.ancestors(son) if a == ROOT or a in alive]
            assert up == live_ancestors[0]
        for node in plan.order:  # every live node still reaches the root
            assert plan.ancestors(node)[-1] == ROOT
            assert all(a == ROOT or a in alive for a in plan.ancestors(node))
        assert set(plan.order) == alive


def test_late_node_joins_the_tail_of_a_chain_or_the_shallowest_slot() -> None:
    chain = ChainPlan.build(ids(3), 1).with_tail("late")
    assert chain.parent("late") == "n3"
    tree = ChainPlan.build(ids(3), 2).with_tail("late")
    assert tree.parent("late") == "n1"  # n1 has one son (n3), the root is full
    finished_tail = ChainPlan.build(ids(3), 1).with_tail("late", lambda n: n != "n3")
    assert finished_tail.parent("late") == ROOT  # a finished tail cannot serve it
