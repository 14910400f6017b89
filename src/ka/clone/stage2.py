"""Stage2 of the boot environment, served by the golden node through the chain.

A node booted by the network runs stage1 (`ka bootenv build`: the kernel and a small initramfs
fetched by TFTP); stage1 asks for the session PREFIX-stage2 (the original's `getstage2`) on the
stage2 port and unpacks what it receives before it runs `ka install`. `Stage2Server` keeps
offering that session, one after another, for as long as `ka clone` waits for nodes: the nodes
that boot together share one session (a chain: the golden node sends stage2 once, whatever
their number), a node that boots later gets the next one, and every session is signed and
keyed like the clone's own, so stage1 refuses a stage2 from anyone else.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ka.boot.init_script import STAGE2_PORT
from ka.errors import KaError, UsageError

__all__ = ["STAGE2_PORT", "Stage2Server", "check_stage2", "serving_stage2", "stage2_path"]

# A session starts when every node it waits for joined, or this long after the first one did:
# nodes that boot together arrive within a few seconds of each other (TFTP spreads them).
GATHER_SECONDS = 5.0
# Every hop holds a whole chunk before it passes it on, so the last of N nodes starts N - 1
# chunk-times late: for 17 MiB of stage2 at 100 Mbit/s to 32 nodes, 31 x 22 ms = 0.7 s with
# the default 256 KiB against a 1.5 s stream; 32 KiB chunks make it 0.09 s.
STAGE2_CHUNK = 32 * 1024


def check_stage2(path: str) -> int:
    """Refuse, before any session, a stage2 that stage1 could not unpack; its size."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        size = os.path.getsize(path)
    except OSError as e:
        raise UsageError(f"stage2 {path}: {e.strerror}",
                         hint="build it with `ka bootenv build --output DIR` (DIR/stage2.cpio.gz)"
                         ) from e
    if head != b"\x1f\x8b":
        raise UsageError(f"stage2 {path} is not a gzip archive",
                         hint="give the stage2.cpio.gz written by `ka bootenv build`")
    try:
        with gzip.open(path) as f:
            if f.read(6) != b"070701":
                raise UsageError(f"stage2 {path} is not a cpio archive (newc)",
                                 hint="give the stage2.cpio.gz written by `ka bootenv build`")
    except (OSError, EOFError) as e:
        raise UsageError(f"stage2 {path} cannot be read: {e}") from e
    return size


@dataclass
class Stage2Stats:
    sessions: int = 0
    received: int = 0  # nodes that received it whole (a node that boots twice counts twice)
    failed: int = 0


class Stage2Server:
    """Sessions PREFIX-stage2 one after another, until `close()`; each waits for `nodes`
    (fewer as nodes are served, never below one) or `gather` seconds after its first node."""

    RETRY_SECONDS = 2.0  # after a failed session (times the failures in a row, up to 30 s)

    def __init__(self, path: str, prefix: str, *, nodes: int, key: bytes | None,
                 identity: bytes | None, port: int = STAGE2_PORT, bind: str = "0.0.0.0",
                 stall_timeout: float = 5.0, gather: float = GATHER_SECONDS,
                 say: Callable[[str], None] = lambda _m: None,
                 send: Callable[..., Any] | None = None) -> None:
        self.path, self.session = path, f"{prefix}-stage2"
        self.nodes, self.key, self.identity = nodes, key, identity
        self.port, self.bind, self.stall_timeout, self.gather = port, bind, stall_timeout, gather
        self.say, self._send = say, send
        self.stats = Stage2Stats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.size = check_stage2(path)

    def options(self, nodes: int) -> Any:
        from ka.transport import SendOptions

        return SendOptions(nodes=max(1, nodes), session=self.session, port=self.port,
                           key=self.key, identity=self.identity, bind=self.bind,
                           stall_timeout=self.stall_timeout, min_nodes=1, gather=self.gather,
                           chunk_size=STAGE2_CHUNK)

    def __enter__(self) -> Stage2Server:
        from ka.transport.sender import validate

        validate(self.options(self.nodes))  # a bad port or key is said now, not in the thread
        self._thread = threading.Thread(target=self._serve, name="stage2", daemon=True)
        self._thread.start()
        self.say(f"serving stage2 ({self.size / 2**20:.1f} MiB) to booting nodes in "
                 f"{self.session} on port {self.port}")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the session waiting for nodes (or sending: its nodes retry); wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _serve(self) -> None:
        from ka.transport import FileSource, send

        send_fn = self._send or send
        failures = 0
        while not self._stop.is_set():
            try:
                report = send_fn(FileSource(self.path),
                                 self.options(self.nodes - self.stats.received), None,
                                 stop=self._stop)
            except KaError as e:
                if self._stop.is_set():
                    return
                failures += 1
                self.say(f"stage2: session failed: {e}")
                # A port another program holds does not free itself: say it, wait, try again.
                self._stop.wait(min(30.0, self.RETRY_SECONDS * failures))
                continue
            failures = 0
            ok = sum(1 for n in report.nodes if n.state == "ok")
            self.stats.sessions += 1
            self.stats.received += ok
            self.stats.failed += len(report.nodes) - ok
            names = ", ".join(n.name or n.node for n in report.nodes if n.state != "ok")
            self.say(f"stage2: {ok} of {len(report.nodes)} node(s) received it in "
                     f"{report.seconds:.1f} s" + (f" (not: {names})" if names else ""))

    def summary(self) -> str:
        s = self.stats
        return (f"stage2: {s.received} node(s) received it in {s.sessions} session(s)"
                + (f", {s.failed} did not" if s.failed else ""))


def stage2_path(given: str | None, pxe: Any, refused: bool) -> str | None:
    """What `ka clone` serves: --stage2 FILE, else with --pxe the TFTP tree's stage2 (none
    for a --single boot environment), never with --no-stage2."""
    if given is not None and refused:
        raise UsageError("--stage2 and --no-stage2 contradict each other")
    if refused:
        return None
    if given is not None:
        check_stage2(given)
        return os.path.abspath(given)
    if pxe is not None:
        from ka.boot.pxe import stage2_of

        return stage2_of(pxe)
    return None


def check_port(port: int, plan: Any, base: int, serve_blocks: int = 0) -> None:
    """The stage2 port must be a port of its own: not one of the clone's sessions."""
    if not 0 < port < 65536:
        raise UsageError(f"--stage2-port {port} is not a port number")
    last = plan.session_port(plan.sessions[-1], base) + serve_blocks * (len(plan.sessions) - 1)
    if base <= port <= last:
        raise UsageError(f"--stage2-port {port} is one of the clone's session ports "
                         f"({base}-{last})", hint=f"the default is {STAGE2_PORT}")


@contextlib.contextmanager
def serving_stage2(path: str | None, plan: Any, settings: Any, port: int,
                   say: Callable[[str], None] | None = None) -> Iterator[Stage2Server | None]:
    """Stage2 sessions for the whole `with` block (nothing when `path` is None), with the
    clone's key and identity; at the end one line says how many nodes received it."""
    if path is None:
        yield None
        return

    def say_err(message: str) -> None:
        print(f"ka: {message}", file=sys.stderr, flush=True)

    server = Stage2Server(path, plan.prefix, nodes=plan.nodes, key=settings.key,
                          identity=settings.identity, port=port, bind=settings.bind,
                          stall_timeout=settings.stall_timeout,
                          gather=settings.gather or GATHER_SECONDS, say=say or say_err)
    with server:
        yield server
    server.say(server.summary())
