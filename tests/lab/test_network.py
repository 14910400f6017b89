"""The lab network for real: namespaces, bridge, addresses, broadcast, shaping, teardown."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ka.errors import CommandError
from ka.lab.network import LabError, LabNetwork, existing_namespaces
from ka.run import run, spawn

pytestmark = pytest.mark.lab

PROBE = str(Path(__file__).with_name("netprobe.py"))
PORT = 30999


def root_links() -> set[str]:
    return {link["ifname"] for link in json.loads(run(["ip", "-j", "link", "show"]).stdout)}


def lab_namespaces(lab: LabNetwork) -> set[str]:
    return existing_namespaces() & set(lab.namespaces)


def probe(lab: LabNetwork, host: int, *args: object) -> subprocess.Popen[bytes]:
    """Start a probe on `host` and wait until it listens (it prints 'ready')."""
    proc = lab.spawn(host, [sys.executable, PROBE, *map(str, args)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    return proc


def finish(proc: subprocess.Popen[bytes]) -> list[str]:
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    return out.decode().splitlines()


@pytest.fixture(scope="module")
def lab() -> Iterator[LabNetwork]:
    before = root_links()
    with LabNetwork(2, rate="100mbit") as built:
        # Nothing of the lab may appear in the root namespace.
        assert root_links() == before
        yield built
    assert root_links() == before


def test_every_host_reaches_every_other(lab: LabNetwork) -> None:
    for server in lab.hosts:
        others = [h for h in lab.hosts if h is not server]
        listener = probe(lab, server.index, "listen-tcp", PORT, len(others), 10)
        answers = [
            lab.run(client.index, [sys.executable, PROBE, "connect", server.address, PORT, 20])
            for client in others
        ]
        peers = finish(listener)
        assert sorted(peers) == sorted(h.address for h in others)
        assert {a.stdout.strip() for a in answers} == {server.address}


def test_every_host_has_its_lab_name_and_the_machine_keeps_its_own(lab: LabNetwork) -> None:
    machine = run(["hostname"]).stdout.strip()
    names = [lab.run(h.index, ["hostname"]).stdout.strip() for h in lab.hosts]
    assert names == ["golden", "node1", "node2"]
    assert run(["hostname"]).stdout.strip() == machine
    # Its pid is the command's (it replaces itself): a signal to the lab's process reaches it.
    proc = lab.spawn(1, ["sh", "-c", "echo $$; exec sleep 30"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert int(proc.stdout.readline()) == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_receiver_joins_with_its_host_name(lab: LabNetwork, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"lab names\n" * 1000)
    ka = [sys.executable, "-m", "ka"]
    procs = [lab.spawn(0, [*ka, "send", "--nodes", "2", "--session", "names", "--input",
                           str(data), "--json", "--port", str(PORT + 1)],
                       stdout=subprocess.PIPE)]
    procs += [lab.spawn(i, [*ka, "receive", "--session", "names", "--output", "/dev/null",
                            "--port", str(PORT + 1), "--find-timeout", "20"]) for i in (1, 2)]
    try:
        out, _ = procs[0].communicate(timeout=60)
        statuses = [p.wait(timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert statuses == [0, 0, 0]
    joined = [e["message"] for e in map(json.loads, out.decode().splitlines())
              if e.get("event") == "joined"]
    assert sorted(joined) == ["node1 joined (1/2)", "node2 joined (2/2)"] or \
        sorted(joined) == ["node1 joined (2/2)", "node2 joined (1/2)"], joined


def test_broadcast_reaches_the_lab_and_nothing_else(lab: LabNetwork) -> None:
    # The root namespace only listens here; nothing is ever sent from it.
    root = spawn([sys.executable, PROBE, "listen-udp", PORT, 3], stdout=subprocess.PIPE)
    assert root.stdout is not None and root.stdout.readline().strip() == b"ready"
    try:
        golden = probe(lab, 0, "listen-udp", PORT, 3)
        node2 = probe(lab, 2, "listen-udp", PORT, 3)
        lab.run(1, [sys.executable, PROBE, "broadcast", PORT, "hello-lab", 5])
        sender = lab.hosts[1].address
        assert f"{sender} hello-lab" in finish(node2)
        assert f"{sender} hello-lab" in finish(golden)
    finally:
        root_lines = finish(root)
    assert root_lines == []


def test_hosts_have_one_interface_with_broadcast_and_default_route(lab: LabNetwork) -> None:
    for host in lab.hosts:
        links = json.loads(lab.run(host.index, ["ip", "-j", "addr", "show"]).stdout)
        assert sorted(link["ifname"] for link in links) == ["eth0", "lo"]
        eth0 = next(link for link in links if link["ifname"] == "eth0")
        inet = [a for a in eth0["addr_info"] if a["family"] == "inet"]
        assert [(a["local"], a["prefixlen"]) for a in inet] == [(host.address, 24)]
        assert inet[0]["broadcast"] == host.address.rsplit(".", 1)[0] + ".255"
        routes = json.loads(lab.run(host.index, ["ip", "-j", "route", "show", "default"]).stdout)
        assert [r["dev"] for r in routes] == ["eth0"]


def test_switch_has_no_uplink(lab: LabNetwork) -> None:
    links = json.loads(run(["ip", "-n", lab.switch_netns, "-j", "link", "show"]).stdout)
    ports = sorted(link["ifname"] for link in links if link.get("master") == lab.bridge)
    assert ports == sorted(lab.port(h.index) for h in lab.hosts)
    others = {link["ifname"] for link in links} - set(ports)
    assert others == {"lo", lab.bridge}
    addresses = json.loads(run(["ip", "-n", lab.switch_netns, "-j", "-4", "addr"]).stdout)
    assert [a["ifname"] for a in addresses if a["addr_info"]] == ["lo"]


def test_every_port_is_shaped_both_ways(lab: LabNetwork) -> None:
    for host in lab.hosts:
        for netns, dev in ((host.netns, "eth0"), (lab.switch_netns, lab.port(host.index))):
            qdiscs = json.loads(run(["tc", "-n", netns, "-j", "qdisc", "show", "dev", dev]).stdout)
            root = [q for q in qdiscs if q.get("root")]
            assert [q["kind"] for q in root] == ["tbf"], (netns, dev)
            assert root[0]["options"]["rate"] == 100_000_000 // 8  # tc reports bytes/s


def test_one_host_shaped_apart_both_ways() -> None:
    with LabNetwork(2, rate="100mbit") as lab:
        lab.shape(2, "25mbit")
        rates = {}
        for host in lab.hosts:
            for netns, dev in ((host.netns, "eth0"), (lab.switch_netns, lab.port(host.index))):
                out = run(["tc", "-n", netns, "-j", "qdisc", "show", "dev", dev]).stdout
                rates[netns, dev] = [q["options"]["rate"] for q in json.loads(out) if q.get("root")]
        slow = {(lab.hosts[2].netns, "eth0"), (lab.switch_netns, lab.port(2))}
        assert len(rates) == 6
        for where, rate in rates.items():
            assert rate == [(25 if where in slow else 100) * 1_000_000 // 8], where


def test_unshaped_lab_has_no_token_bucket() -> None:
    with LabNetwork(1) as lab:
        out = lab.run(1, ["tc", "-j", "qdisc", "show", "dev", "eth0"]).stdout
        assert all(q["kind"] != "tbf" for q in json.loads(out))
    assert lab_namespaces(lab) == set()


def test_failure_half_way_up_removes_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    before = root_links()
    lab = LabNetwork(3, rate="1gbit")
    real = LabNetwork._build_host

    def failing(self: LabNetwork, host: object) -> None:
        if getattr(host, "index", 0) == 2:
            run(["false"])
        real(self, host)  # type: ignore[arg-type]

    monkeypatch.setattr(LabNetwork, "_build_host", failing)
    with pytest.raises(CommandError):
        lab.up()
    assert lab_namespaces(lab) == set()
    assert root_links() == before
    assert not lab.is_up
    lab.down()  # still idempotent


def test_down_is_idempotent_and_ends_processes_left_on_hosts() -> None:
    lab = LabNetwork(1)
    lab.up()
    try:
        sleeper = lab.spawn(1, ["sleep", "60"])
        lab.down()
        assert sleeper.wait(timeout=5) != 0
        assert lab_namespaces(lab) == set()
        lab.down()
        assert lab_namespaces(lab) == set()
    finally:
        lab.down()  # on a failure above: the lab is still removed


def test_a_name_in_use_is_refused_without_harming_the_lab_using_it() -> None:
    with LabNetwork(1) as first:
        second = LabNetwork(1, name=first.name)
        with pytest.raises(LabError, match="already exists"):
            second.up()
        second.down()
        assert lab_namespaces(first) == set(first.namespaces)
