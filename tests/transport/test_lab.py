"""Sessions across network namespaces of the virtual lab, nodes finding the sender by name."""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_loopback import assert_all_ok, assert_survivors, wait_produced
from transport_cluster import Cluster, Wrap

from ka.lab.network import LabNetwork

pytestmark = pytest.mark.lab
MiB = 1024 * 1024
NODES = 4


@pytest.fixture
def lab() -> Iterator[LabNetwork]:
    with LabNetwork(NODES) as network:
        yield network


def lab_cluster(tmp: Path, lab: LabNetwork, session: str) -> Cluster:
    hosts = {"sender": 0, **{f"node{i}": i for i in range(1, NODES + 1)}}

    def wrap(name: str, argv: list[str]) -> list[str]:
        return lab.argv(hosts.get(name, NODES), argv)

    return Cluster(tmp, port=30765, wrap=wrap, bind="0.0.0.0", find=["--session", session])


def test_discovery_by_name_and_chain_across_namespaces(lab: LabNetwork, tmp_path: Path) -> None:
    c = lab_cluster(tmp_path, lab, "lab-chain")
    try:
        path = tmp_path / "text.bin"
        path.write_bytes(b"".join(b"record %d of the lab stream\n" % i for i in range(400000)))
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        c.send("--input", str(path), "--session", "lab-chain", "--compress", "zstd",
               nodes=NODES)
        names = c.nodes(NODES)
        assert_all_ok(c, names, digest)
        start = c.wait_event("sender", "start")
        addresses = [h.address for h in lab.hosts[1:]]
        assert [i.rsplit(":", 1)[0] for i in start["order"]] == addresses  # numeric order
    finally:
        c.close()


def test_middle_node_killed_and_wrong_key_in_the_lab(lab: LabNetwork, tmp_path: Path) -> None:
    c = lab_cluster(tmp_path, lab, "lab-heal")
    key, wrong = tmp_path / "key", tmp_path / "wrong"
    key.write_bytes(b"lab key")
    wrong.write_bytes(b"not the lab key")
    try:
        path, digest = c.data(12 * MiB)
        c.send("--command", c.slow(path, pause=0.05), "--session", "lab-heal",
               "--key-file", str(key), "--ring-size", "4M", nodes=NODES)
        names = c.nodes(NODES, "--key-file", str(key))
        order = c.order()
        c.receive("intruder", "--key-file", str(wrong))  # runs on the last node's host
        wait_produced(c, 4 * MiB)
        victim = order[1]
        c.signal(victim, signal.SIGKILL)
        assert c.wait("intruder", 40) in (10, 11)  # unanswered discovery or refused
        assert not (tmp_path / "intruder.sha").exists()
        assert_survivors(c, [n for n in names if n != victim], digest, victim)
    finally:
        c.close()


def test_two_sessions_share_the_lan(lab: LabNetwork, tmp_path: Path) -> None:
    """Two senders on one port number, told apart by session name alone."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    alpha_hosts = {"sender": 0, "node1": 2, "node2": 3}
    beta_hosts = {"sender": 1, "node1": 4}

    def on(hosts: dict[str, int]) -> Wrap:
        return lambda name, argv: lab.argv(hosts[name], argv)

    alpha = Cluster(tmp_path / "a", port=30765, wrap=on(alpha_hosts), bind="0.0.0.0",
                    find=["--session", "alpha"])
    beta = Cluster(tmp_path / "b", port=30765, wrap=on(beta_hosts), bind="0.0.0.0",
                   find=["--session", "beta"])
    try:
        pa, da = alpha.data(3 * MiB)
        pb, db = beta.data(3 * MiB)
        alpha.send("--input", str(pa), "--session", "alpha", nodes=2)
        beta.send("--input", str(pb), "--session", "beta", nodes=1)
        alpha.nodes(2)
        beta.nodes(1)
        assert_all_ok(alpha, ["node1", "node2"], da)
        assert_all_ok(beta, ["node1"], db)
        assert da != db
    finally:
        alpha.close()
        beta.close()
