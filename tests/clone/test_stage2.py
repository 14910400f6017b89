"""`ka clone` serving stage2: which file, which sessions, and what the nodes are told."""

from __future__ import annotations

import gzip
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ka.boot.init_script import STAGE2_PORT
from ka.clone import stage2 as stage2_mod
from ka.clone.stage2 import Stage2Server, check_port, check_stage2, stage2_path
from ka.errors import UsageError
from ka.transport.errors import TransportError


def make_stage2(path: Path) -> str:
    path.write_bytes(gzip.compress(b"070701" + b"0" * 200))
    return str(path)


def test_check_stage2_refuses_what_stage1_could_not_unpack(tmp_path: Path) -> None:
    assert check_stage2(make_stage2(tmp_path / "ok.cpio.gz")) > 0
    with pytest.raises(UsageError, match="No such file"):
        check_stage2(str(tmp_path / "missing"))
    (tmp_path / "plain").write_bytes(b"070701 not compressed")
    with pytest.raises(UsageError, match="not a gzip archive"):
        check_stage2(str(tmp_path / "plain"))
    (tmp_path / "tar.gz").write_bytes(gzip.compress(b"ustar" + b"\0" * 100))
    with pytest.raises(UsageError, match="not a cpio archive"):
        check_stage2(str(tmp_path / "tar.gz"))


@dataclass
class FakePxe:
    tftp_root: str


def test_stage2_path_rules(tmp_path: Path) -> None:
    given = make_stage2(tmp_path / "s.cpio.gz")
    assert stage2_path(given, None, False) == given
    assert stage2_path(None, None, False) is None
    with pytest.raises(UsageError, match="contradict"):
        stage2_path(given, None, True)
    root = tmp_path / "tftp"
    (root / "ka").mkdir(parents=True)
    pxe = FakePxe(str(root))
    assert stage2_path(None, pxe, False) is None, "a --single boot environment: none"
    make_stage2(root / "ka" / "stage2.cpio.gz")
    assert stage2_path(None, pxe, False) == str(root / "ka" / "stage2.cpio.gz")
    assert stage2_path(None, pxe, True) is None


def test_the_stage2_port_is_not_a_session_port() -> None:
    class Plan:
        sessions = ("ka-plan", "ka-fs-1", "ka-done")

        def session_port(self, name: str, base: int) -> int:
            return base + self.sessions.index(name)

    check_port(STAGE2_PORT, Plan(), 30765)
    with pytest.raises(UsageError, match="one of the clone's session ports"):
        check_port(30766, Plan(), 30765)
    with pytest.raises(UsageError, match="one of the clone's session ports"):
        check_port(30765 + 2 + 4 * 2, Plan(), 30765, serve_blocks=4)
    with pytest.raises(UsageError, match="not a port"):
        check_port(70000, Plan(), 30765)


@dataclass
class Node:
    node: str
    name: str | None
    state: str


@dataclass
class Report:
    nodes: tuple[Node, ...]
    seconds: float = 0.5


class FakeSend:
    """Stands in for the transport: records each session's options; serves `joined`
    nodes per session, then blocks like a session waiting for nodes until stopped."""

    def __init__(self, joined: list[list[str]]) -> None:
        self.joined = joined
        self.options: list[Any] = []
        self.sources: list[Any] = []
        self.waiting = threading.Event()

    def __call__(self, source: Any, options: Any, on_event: Any, stop: threading.Event) -> Any:
        self.options.append(options)
        self.sources.append(source)
        if self.joined:
            states = self.joined.pop(0)
            return Report(tuple(Node(f"10.0.0.{i}:1", f"n{i}", s)
                                for i, s in enumerate(states)))
        self.waiting.set()
        assert stop.wait(10), "never stopped"
        raise TransportError("stopped")


def test_sessions_follow_each_other_until_closed_and_wait_for_fewer_nodes(
        tmp_path: Path) -> None:
    path = make_stage2(tmp_path / "s.cpio.gz")
    fake = FakeSend([["ok", "ok"], ["ok", "failed"]])
    said: list[str] = []
    key, identity = os.urandom(32), os.urandom(32)
    with Stage2Server(path, "lab", nodes=5, key=key, identity=identity, gather=2.0,
                      say=said.append, send=fake) as server:
        assert fake.waiting.wait(10)
    assert [o.nodes for o in fake.options] == [5, 3, 2], "the nodes served are not waited for"
    first = fake.options[0]
    assert (first.session, first.port, first.key, first.identity, first.gather,
            first.min_nodes) == ("lab-stage2", STAGE2_PORT, key, identity, 2.0, 1)
    assert all(str(src.path) == path for src in fake.sources)
    assert server.stats.received == 3 and server.stats.failed == 1
    assert server.stats.sessions == 2
    assert "stage2: 1 of 2 node(s) received it in 0.5 s (not: n1)" in said
    assert server.summary() == "stage2: 3 node(s) received it in 2 session(s), 1 did not"


def test_a_failed_session_is_said_and_serving_goes_on(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_stage2(tmp_path / "s.cpio.gz")
    calls: list[int] = []
    done = threading.Event()

    def send(source: Any, options: Any, on_event: Any, stop: threading.Event) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise TransportError("cannot listen on port 30764: Address already in use")
        done.set()
        stop.wait(10)
        raise TransportError("stopped")

    said: list[str] = []
    monkeypatch.setattr(stage2_mod.Stage2Server, "RETRY_SECONDS", 0.01)
    with Stage2Server(path, "ka", nodes=1, key=None, identity=None, say=said.append,
                      send=send):
        assert done.wait(10)
    assert any("Address already in use" in s for s in said)


def test_bad_settings_are_refused_before_any_session(tmp_path: Path) -> None:
    path = make_stage2(tmp_path / "s.cpio.gz")
    with pytest.raises(UsageError):
        Stage2Server(path, "ka", nodes=1, key=b"short", identity=None).__enter__()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow  # a real sender and three node processes on loopback
def test_nodes_that_boot_together_share_a_session_and_a_later_one_gets_its_own(
        tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    from ka.keys import new_key, write_identity, write_key_file

    path = tmp_path / "stage2.cpio.gz"
    path.write_bytes(gzip.compress(b"070701" + os.urandom(3 << 20)))
    key_file = tmp_path / "key"
    write_key_file(str(key_file), new_key())
    private, public = write_identity(str(tmp_path / "identity"))
    from ka.keys import read_identity, read_key_file

    port = free_port()
    said: list[str] = []

    def node(name: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "ka", "receive", "--host", "127.0.0.1", "--port", str(port),
             "--output", str(tmp_path / name), "--key-file", str(key_file), "--golden-key",
             str(public), "--name", name, "--find-timeout", "30"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    procs: list[subprocess.Popen[bytes]] = []
    try:
        with Stage2Server(str(path), "lab", nodes=3, key=read_key_file(str(key_file)),
                          identity=read_identity(str(private)), port=port, bind="127.0.0.1",
                          gather=1.5, say=said.append) as server:
            procs += [node("n1"), node("n2")]
            for p in procs:
                assert p.wait(60) == 0, p.stderr.read() if p.stderr else ""
            assert server.stats.sessions == 1 and server.stats.received == 2, said
            procs.append(node("n3"))  # boots later, alone
            assert procs[-1].wait(60) == 0
            deadline = time.monotonic() + 10
            while server.stats.sessions < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert server.stats.sessions == 2 and server.stats.received == 3, said
    for name in ("n1", "n2", "n3"):
        assert (tmp_path / name).read_bytes() == path.read_bytes()
    assert said[0].startswith("serving stage2 (3.0 MiB) to booting nodes in lab-stage2")
    assert said[1].startswith("stage2: 2 of 2 node(s) received it in")
    assert said[2].startswith("stage2: 1 of 1 node(s) received it in")
