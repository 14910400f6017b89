"""`ka clone --serve`'s waves over an in-memory transport: nodes that come are gathered into
waves that run side by side on ports of their own, until --until or a stop."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from ka.clone.deploy import SessionSettings
from ka.clone.hostnames import parse_pattern
from ka.clone.plan import ClonePlan, GoldenDisk, GoldenPartition, Stream
from ka.clone.report import InstallReport, StepRecord
from ka.image.serve import ServeOptions, serve, wave_plan
from ka.transport import TransportError
from ka.transport.options import NodeReport, SendOptions, SessionReport

PLAN = ClonePlan(
    prefix="t", nodes=1000,
    disks=(GoldenDisk("sda", "label gpt\nlinux fill fs=ext4 mount=/\n", 1 << 30),),
    partitions=(GoldenPartition("sda", 1, "ext4", "/", content="tar"),),
    streams=(Stream("t-fs-1", "tar", "sda", 1, "/"),),
    fstab="", hostnames=parse_pattern("n{n}"),
)
PORT = 40000


def _report(nodes: list[tuple[str, int]], attach: bool = False) -> SessionReport:
    rows = []
    for name, pos in nodes:
        body = None
        if attach:
            body = InstallReport(name, pos, "ok", None, (StepRecord("x", "ok", 0.1, 0.0),), (),
                                 0.0, 2.0).to_json().encode()
        rows.append(NodeReport(f"10.0.0.{pos}:4000", name, pos, "ok", 100, 1.0, True, 0,
                               None, body))
    return SessionReport(tuple(rows), 100, 1.0, 0.1, "d" * 64)


class Arrivals:
    """The plan session hands out the next group of waiting nodes; with none left it waits
    until it is stopped, as the transport does."""

    def __init__(self, groups: list[int], hold: float = 0.0) -> None:
        self.groups = list(groups)
        self.hold = hold  # how long a wave's stream session takes
        self.waves: list[ClonePlan] = []
        self.ports: dict[str, list[int]] = {}
        self.lock = threading.Lock()

    def __call__(self, source: Any, options: SendOptions, callback: Any,
                 stop: threading.Event | None = None) -> SessionReport:
        assert stop is not None
        name = options.session or ""
        self.ports.setdefault(name, []).append(options.port)
        if name == "t-plan":
            assert options.port == PORT and options.gather == 0.0
            with self.lock:
                group = self.groups.pop(0) if self.groups else 0
                if group:
                    source.open()
                    buf = bytearray(1 << 20)
                    n = source.read_into(memoryview(buf))
                    self.waves.append(ClonePlan.from_json(bytes(buf[:n])))
                    wave = len(self.waves)
            if not group:
                while not stop.is_set():
                    time.sleep(0.01)
                raise TransportError("stopped: the golden node is ending the run")
            return _report([(f"w{wave}n{i}", i) for i in range(1, group + 1)])
        # The latest wave on this block of ports (blocks are reused once a wave ended).
        wave = max(i for i, p in enumerate(self.waves, 1)
                   if p.session_port(p.sessions[1], PORT) <= options.port
                   <= p.session_port(p.sessions[-1], PORT))
        if stop.wait(self.hold):  # the transport polls its stop all along
            raise TransportError("stopped: the golden node is ending the run")
        group = options.nodes
        return _report([(f"w{wave}n{i}", i) for i in range(1, group + 1)],
                       attach=name.endswith("-done"))


def _serve(arrivals: Arrivals, tmp_path: Path, until: int | None,
           stop: threading.Event | None = None) -> Any:
    settings = SessionSettings(port=PORT, logs_dir=str(tmp_path), stop=stop)
    later = len(PLAN.sessions) - 1
    return serve(lambda n, first, port: wave_plan(PLAN, n, first, port),
                 lambda p: (lambda s: object()), settings, ServeOptions(until=until, waves=2),
                 later, send=arrivals)


def test_waves_run_until_enough_nodes_are_installed(tmp_path: Path) -> None:
    # No third group comes: the third wave's plan session waits until --until ends it.
    arrivals = Arrivals([2, 1])
    result = _serve(arrivals, tmp_path, until=3)
    assert [w.number for w in result.waves] == [1, 2]
    assert len(result.installed()) == 3 and result.ok and not result.interrupted
    assert [p.hostnames.first for p in arrivals.waves[:2]] == [1, 3]  # names count on
    assert [s.session for s in arrivals.waves[1].streams] == ["t-w2-fs-1"]
    assert (tmp_path / "t/wave-1/w1n1.json").exists()
    assert (tmp_path / "t/wave-2/w2n1.json").exists()


def test_concurrent_waves_never_share_a_port(tmp_path: Path) -> None:
    arrivals = Arrivals([1, 1, 1, 1], hold=0.3)
    result = _serve(arrivals, tmp_path, until=4)
    assert len(result.installed()) == 4
    firsts = [p.later_port for p in arrivals.waves]
    # Two blocks (waves=2): the first two waves ran at once on different blocks.
    assert firsts[0] != firsts[1] and set(firsts) == {PORT + 1, PORT + 1 + 2}
    assert all(port != PORT for name, ports in arrivals.ports.items() if name != "t-plan"
               for port in ports)


def test_a_stop_ends_every_wave_and_the_run_is_interrupted(tmp_path: Path) -> None:
    stop = threading.Event()
    arrivals = Arrivals([2], hold=5.0)
    threading.Timer(0.5, stop.set).start()
    t0 = time.monotonic()
    result = _serve(arrivals, tmp_path, until=None, stop=stop)
    assert time.monotonic() - t0 < 4  # the wave's session ended at once, not after 5 s
    assert result.interrupted and not result.ok
    assert [w.number for w in result.waves] == [1]
    assert not result.installed()
