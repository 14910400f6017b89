"""`ka clone --image ... --serve`: keep installing the nodes that come, wave after wave.

A wave is one whole clone run (`CloneRun`): its plan session gathers whoever waits (it starts
as soon as one node joined, or `gather` seconds after the first), then its streams and its
release run in a thread of their own while the next wave's plan session gathers the next
nodes. Every wave's plan session is the same session (PREFIX-plan on the same port), so a
node needs nothing but the prefix or the address; the sessions after it sit on a block of
ports of the wave's own (`ClonePlan.later_port`), so waves never meet, and at most `waves`
blocks, hence waves, run at once. A node whose install failed, and that boots again, simply
comes back to the plan session: it is installed again in a later wave.

Concurrent waves share the golden node's link: each sends its own stream from the image
file, so k waves at once each get about 1/k of the uplink (the chains behind them run at
that rate too); a single wave gets all of it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ka.clone.deploy import (
    BeforeRelease,
    CloneResult,
    CloneRun,
    EventSink,
    SessionSettings,
)
from ka.clone.plan import ClonePlan, Stream
from ka.errors import KaError

WavePlan = Callable[[int, int, int], ClonePlan]  # (wave, first position, later port) -> plan
WaveSources = Callable[[ClonePlan], Callable[[Stream], Any]]


@dataclass(frozen=True)
class ServeOptions:
    until: int | None = None  # end once this many nodes are installed
    gather: float = 0.0  # a wave starts this long after its first node joined
    waves: int = 4  # waves running at once, at most
    wave_nodes: int = 1000  # nodes in one wave, at most


@dataclass(frozen=True)
class Wave:
    number: int
    started: float  # seconds since the start of serving
    seconds: float
    result: CloneResult | None
    error: str | None = None  # the wave could not run (its result is then None)


@dataclass
class ServeResult:
    waves: list[Wave] = field(default_factory=list)
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)

    def installed(self) -> set[str]:
        return {n.name for w in self.waves if w.result for n in w.result.nodes
                if n.result == "ok"}

    def failed_attempts(self) -> int:
        return sum(1 for w in self.waves if w.result for n in w.result.nodes
                   if n.result != "ok")

    @property
    def ok(self) -> bool:
        """Serving went as it should: not interrupted, no golden-side error, nodes installed.
        A node's failed attempt is not a failure of the run (the node comes back and is
        installed again: that is what serving is for); it is in the summary all the same."""
        return (not self.interrupted and not self.errors and bool(self.installed())
                and all(w.result is not None and not w.result.errors for w in self.waves))


def wave_plan(plan: ClonePlan, number: int, first: int, later_port: int) -> ClonePlan:
    """Wave `number` of `plan`: the same plan session; its streams named for the wave
    (PREFIX-wN-fs-1...) on its own ports from `later_port`; host names counted on from
    `first`, the position of its first node among all the nodes served."""
    marker = f"{plan.prefix}-w{number}"
    streams = tuple(dataclasses.replace(s, session=marker + s.session[len(plan.prefix):])
                    for s in plan.streams)
    hostnames = dataclasses.replace(plan.hostnames, first=first) if plan.hostnames else None
    return dataclasses.replace(plan, streams=streams, hostnames=hostnames,
                               later_port=later_port)


def serve(make_plan: WavePlan, sources_of: WaveSources, settings: SessionSettings,
          opts: ServeOptions, later_sessions: int, on_event: EventSink | None = None,
          say: Callable[[str], None] = lambda _m: None,
          send: Callable[..., Any] | None = None,
          before_release: BeforeRelease | None = None,
          on_wave: Callable[[Wave], None] | None = None) -> ServeResult:
    """Serve waves until `opts.until` nodes are installed or `settings.stop` is set (the
    caller sets it on SIGINT/SIGTERM: every session then ends at once); `on_wave` sees each
    wave as it ends (in the wave's thread)."""
    stop = settings.stop or threading.Event()
    gathering = threading.Event()  # set: the plan session waiting for nodes gives up
    out = ServeResult()
    lock = threading.Lock()
    free = list(range(opts.waves))
    running: dict[int, threading.Thread] = {}
    t0 = time.monotonic()
    positions = 1

    def check_until() -> None:
        if opts.until is not None and len(out.installed()) >= opts.until:
            gathering.set()

    def run_wave(number: int, block: int, run: CloneRun, first: Any, started: float) -> None:
        try:
            result = run.finish(first, before_release, sources_of(run.plan))
            wave = Wave(number, started - t0, time.monotonic() - started, result)
        except Exception as e:  # noqa: BLE001 - one wave's failure is reported, serving goes on
            what = str(e) if isinstance(e, KaError) else f"{type(e).__name__}: {e}"
            wave = Wave(number, started - t0, time.monotonic() - started, None, what)
        with lock:
            out.waves.append(wave)
            free.append(block)
            check_until()
        if on_wave is not None:
            on_wave(wave)
        ok = sum(1 for n in wave.result.nodes if n.result == "ok") if wave.result else 0
        say(f"wave {number} ended after {wave.seconds:.1f} s: {ok} node(s) installed"
            + (f", {len(wave.result.nodes) - ok} failed" if wave.result else f": {wave.error}"))

    number = 0
    try:
        while not stop.is_set() and not gathering.is_set():
            with lock:
                block = free.pop(0) if free else None
            if block is None:
                time.sleep(0.1)  # every port block busy: the next wave waits for one
                continue
            number += 1
            plan = make_plan(number, positions, settings.port + 1 + block * later_sessions)
            wave_settings = dataclasses.replace(settings, stop=stop, gather=opts.gather,
                                                logs_name=f"{plan.prefix}/wave-{number}")
            run = CloneRun(plan, wave_settings, on_event, send)
            say(f"wave {number}: waiting for nodes in {plan.plan_session}")
            try:
                first = run.plan_session(stop=_Either(stop, gathering))
            except KaError as e:
                with lock:
                    free.append(block)
                if stop.is_set() or gathering.is_set():
                    break
                out.errors.append(f"wave {number}: {e}")
                continue
            positions += len(first.nodes)
            started = time.monotonic()
            say(f"wave {number}: {len(first.nodes)} node(s) took the plan")
            thread = threading.Thread(target=run_wave, name=f"wave-{number}",
                                      args=(number, block, run, first, started))
            running[number] = thread
            thread.start()
    except KeyboardInterrupt:
        out.interrupted = True
        stop.set()
    finally:
        if stop.is_set():
            out.interrupted = True
        gathering.set()
        for thread in running.values():
            _join(thread, stop)
    out.waves.sort(key=lambda w: w.number)
    return out


def _join(thread: threading.Thread, stop: threading.Event) -> None:
    """Wait for a wave; a Ctrl-C while waiting ends every session at once."""
    while thread.is_alive():
        try:
            thread.join(0.2)
        except KeyboardInterrupt:
            stop.set()


class _Either(threading.Event):
    """Set when either of two events is (what the transport's `stop` polls)."""

    def __init__(self, a: threading.Event, b: threading.Event) -> None:
        super().__init__()
        self._a, self._b = a, b

    def is_set(self) -> bool:
        return self._a.is_set() or self._b.is_set()

