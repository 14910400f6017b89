"""The real control plane at N = 1,000 simulated nodes with every kind of failure at seeded
random times (ka.transport.simulation; benchmarks/scale.py runs it up to 10,000)."""

from __future__ import annotations

import pytest

from ka.transport.simulation import Failure, Fault, Scenario, Simulation, random_failures

N = 1000


@pytest.mark.slow  # a few seconds each
@pytest.mark.parametrize("arity", [1, 3])
def test_a_thousand_nodes_with_failures_end_complete_or_reported(arity: int) -> None:
    failures = random_failures(N, seed=7, duration=2.5)
    assert {f.fault for f in failures} == set(Fault)
    out = Simulation(Scenario(nodes=N, arity=arity, failures=failures)).run()
    killed_or_stalled = sum(f.fault in (Fault.KILLED, Fault.STALLED) for f in failures)
    assert out.wrong == []
    assert out.reported_failed == killed_or_stalled
    assert out.complete == N - killed_or_stalled  # the slow and the reset node finish too
    # detected and healed within 3 s (simulated time: not a measure of this machine)
    assert len(out.detect) == killed_or_stalled and max(out.detect) <= 3.0
    assert out.heal and max(out.heal) <= 3.0
    # pings and reports only: a handful of messages per node per second
    assert out.per_node_per_second < 8


@pytest.mark.slow
def test_messages_per_node_stay_flat_and_memory_grows_linearly() -> None:
    small = Simulation(Scenario(nodes=100)).run()
    large = Simulation(Scenario(nodes=N)).run()
    assert small.wrong == [] and large.wrong == []
    ratio = large.per_node_per_second / small.per_node_per_second
    assert 0.7 < ratio < 1.5
    assert large.memory < 15 * small.memory  # 10 times the nodes


def test_a_brief_outage_of_the_senders_link_evicts_nobody() -> None:
    out = Simulation(Scenario(nodes=200, failures=(
        Failure(Fault.SENDER_DOWN, at=0.3, seconds=1.5),))).run()
    assert out.wrong == [] and out.complete == 200 and not out.detect
