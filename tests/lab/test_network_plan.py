"""The lab network's pure parts: rates, token buckets, names, addresses (no root needed)."""

from __future__ import annotations

import sys

import pytest

from ka.errors import UsageError
from ka.lab.network import LabNetwork, TokenBucket, parse_rate, subnet_for, unique_name


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("100mbit", 100_000_000),
        ("1gbit", 1_000_000_000),
        ("250mbit", 250_000_000),
        ("64kbit", 64_000),
        ("none", None),
        (None, None),
    ],
)
def test_parse_rate(text: str | None, bits: int | None) -> None:
    assert parse_rate(text) == bits


@pytest.mark.parametrize("text", ["fast", "100", "100mb", "0mbit", "-1gbit"])
def test_parse_rate_rejects_nonsense(text: str) -> None:
    with pytest.raises(UsageError):
        parse_rate(text)


def test_token_bucket_holds_a_gso_packet_and_a_timer_tick() -> None:
    slow = TokenBucket.for_rate(100_000_000)
    assert slow.burst_bytes == 64 * 1024
    fast = TokenBucket.for_rate(1_000_000_000)
    assert fast.burst_bytes == 500_000  # 4 ms at 125 MB/s
    assert slow.tc_args() == ["tbf", "rate", "100000000bit", "burst", "65536", "latency", "20ms"]


def test_hosts_are_named_and_addressed_from_the_lab_name() -> None:
    lab = LabNetwork(3, rate="100mbit", name="demo")
    assert [h.netns for h in lab.hosts] == [
        "ka-demo-golden",
        "ka-demo-node1",
        "ka-demo-node2",
        "ka-demo-node3",
    ]
    prefix = subnet_for("demo")
    assert [h.address for h in lab.hosts] == [f"{prefix}.{i}" for i in (1, 2, 3, 4)]
    assert prefix.startswith("10.254.")
    assert lab.switch_netns == "ka-demo-switch"
    assert lab.argv(2, ["ip", "addr"]) == ["ip", "netns", "exec", "ka-demo-node2",
                                           sys.executable, "-m", "ka.lab.uts", "node2",
                                           "ip", "addr"]
    assert lab.argv(0, ["true"])[-2:] == ["golden", "true"]
    assert lab.rate_bits == 100_000_000


def test_unshaped_lab_has_no_rate() -> None:
    assert LabNetwork(1, rate="none", name="x").rate is None
    assert LabNetwork(1, name="x").rate_bits is None


def test_nodes_are_found_by_index_or_name() -> None:
    lab = LabNetwork(3, name="demo")
    assert lab.host("golden").index == 0
    assert lab.host("node3").index == 3
    assert lab.host("2").index == 2
    assert lab.host(0).label == "golden"
    for bad in ("node4", "4", "-1", "gold", "nodeX"):
        with pytest.raises(UsageError):
            lab.host(bad)


def test_bad_names_and_sizes_are_refused() -> None:
    with pytest.raises(UsageError):
        LabNetwork(0, name="x")
    with pytest.raises(UsageError):
        LabNetwork(-1, name="x", machines_only=True)
    assert [h.label for h in LabNetwork(0, name="x", machines_only=True).hosts] == ["golden"]
    for bad in ("", "Upper", "-x", "a/b", "x" * 25):
        with pytest.raises(UsageError):
            LabNetwork(1, name=bad)


def test_unique_names_differ_and_are_valid() -> None:
    names = {unique_name() for _ in range(20)}
    assert len(names) > 1
    for name in names:
        LabNetwork(1, name=name)


def test_down_of_a_lab_never_built_does_nothing() -> None:
    lab = LabNetwork(2, name="never-built")
    lab.down()
    lab.down()
    assert not lab.is_up
