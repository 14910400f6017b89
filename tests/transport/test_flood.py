"""A flood of connections that trickle their bytes, from other loopback addresses, during a
session: the rightful nodes still join, the chain still heals, and everything finishes.

The sender runs with 200 file descriptors: before the gate, the flood used them all up, its
accept loop ended on EMFILE and no node could join any more (issue 10, item 4).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_loopback import assert_all_ok
from transport_cluster import Cluster

pytestmark = pytest.mark.slow  # a sender, nodes and flooding processes
MiB = 1024 * 1024
FLOODERS = ("127.0.0.2", "127.0.0.3")  # the nodes are on 127.0.0.1
PER_TARGET = 120  # per flooding address and listening port

FLOOD = """
import socket, sys, time
sources, per_target, targets = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3:]
conns = {}  # (source, target, i) -> socket or None
def connect(source, target):
    address, port = target.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.bind((source, 0))
        s.connect((address, int(port)))
    except OSError:
        s.close()
        return None
    s.setblocking(False)
    return s
for target in targets:
    for source in sources:
        for i in range(per_target):
            conns[(source, target, i)] = connect(source, target)
print("ready", sum(s is not None for s in conns.values()), flush=True)
end = time.monotonic() + 120
while time.monotonic() < end:
    for key, s in conns.items():
        if s is None:
            conns[key] = connect(key[0], key[1])
            continue
        try:
            s.send(b"K")  # the start of a hello, one byte a second, for ever
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            conns[key] = None
    time.sleep(1.0)
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    def limited(name: str, argv: list[str]) -> list[str]:
        return ["prlimit", "--nofile=200:200", *argv] if name == "sender" else argv

    c = Cluster(tmp_path, wrap=limited)
    (tmp_path / "flood.py").write_text(FLOOD)
    try:
        yield c
    finally:
        c.close()


def flood(c: Cluster, name: str, targets: list[str]) -> int:
    c._start(name, [sys.executable, str(c.tmp / "flood.py"), ",".join(FLOODERS),
                    str(PER_TARGET), *targets])
    deadline = time.monotonic() + 60
    while not (out := (c.tmp / f"{name}.out").read_text()).startswith("ready"):
        if c.procs[name].poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the flood did not start: {c.stderr(name)}")
        time.sleep(0.1)
    return int(out.split()[1])


def test_rightful_nodes_join_and_finish_through_a_flood(cluster: Cluster) -> None:
    key = cluster.tmp / "key"
    key.write_bytes(os.urandom(32))
    path, digest = cluster.data(16 * MiB)
    cluster.send("--command", cluster.slow(path, pause=0.1), "--key-file", str(key),
                 "--stall-timeout", "20", nodes=3)
    cluster.wait_event("sender", "listening")
    # The flood first holds the sender's control port, then every data port of the chain.
    held = flood(cluster, "flood-control", [f"127.0.0.1:{cluster.port}"])
    assert held > 0
    names = cluster.nodes(3, "--key-file", str(key))
    start = cluster.wait_event("sender", "start", timeout=60)
    flood(cluster, "flood-data", [f"127.0.0.1:{start['data_port']}", *start["order"]])
    # Healing needs the ports too: the middle node dies, its son re-attaches through the flood.
    middle = cluster.order()[1]
    cluster.signal(middle, signal.SIGKILL)
    survivors = [n for n in names if n != middle]
    for name in survivors:
        assert cluster.wait(name, 120) == 0, cluster.stderr(name)
        assert cluster.sha(name) == digest
    assert cluster.wait("sender", 60) == 1  # one node lost: not a full success
    report = cluster.report()
    ok = [n["name"] for n in report["nodes"] if n["state"] == "ok"]
    assert sorted(ok) == sorted(survivors)
    events = [e["event"] for e in cluster.events("sender")]
    assert "refused" in events or "stray" in events  # the flood was seen, and turned away


def test_flood_alone_cannot_stop_a_whole_session(cluster: Cluster) -> None:
    key = cluster.tmp / "key"
    key.write_bytes(os.urandom(32))
    path, digest = cluster.data(4 * MiB)
    cluster.send("--input", str(path), "--key-file", str(key), nodes=2)
    cluster.wait_event("sender", "listening")
    flood(cluster, "flood-control", [f"127.0.0.1:{cluster.port}"])
    time.sleep(2)  # let the flood fill whatever it can
    names = cluster.nodes(2, "--key-file", str(key))
    assert_all_ok(cluster, names, digest)
