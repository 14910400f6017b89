"""A loopback session for tests: one `ka send` and N `ka receive` processes on 127.0.0.1.

Every process is started here and ended here, by pid; ports are picked free per test.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SLOWCAT = """
import sys, time
path, step, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
out = sys.stdout.buffer
with open(path, "rb") as f:
    while chunk := f.read(step):
        out.write(chunk)
        out.flush()
        time.sleep(pause)
"""


STRAY = """
import os, socket, sys, time
held = []
for target in sys.argv[2:]:
    address, port = target.rsplit(":", 1)
    for payload in (b"", os.urandom(64), b"KA/1C" + os.urandom(16)):
        s = socket.create_connection((address, int(port)), timeout=2)
        s.sendall(payload)  # nothing (half-open), random bytes, a hello without proof
        held.append(s)
address, port = sys.argv[1].rsplit(":", 1)
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
    u.sendto(os.urandom(40), (address, int(port)))
print("ready", flush=True)
time.sleep(120)
"""


def free_port() -> int:
    for _ in range(50):
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


Wrap = Callable[[str, list[str]], list[str]]


class Cluster:
    """By default everything on 127.0.0.1; `wrap` runs each process elsewhere (a lab host),
    `bind` is where the sender listens, `sender_address` where it is reached, and with
    `session` nodes find it by that name (UDP broadcast) instead of by address."""

    def __init__(self, tmp: Path, port: int | None = None, wrap: Wrap | None = None,
                 bind: str = "127.0.0.1", session: str | None = None,
                 sender_address: str = "127.0.0.1") -> None:
        self.tmp = tmp
        self.port = port or free_port()
        self.wrap = wrap or (lambda name, argv: argv)
        self.bind = bind
        self.session = session
        self.sender_address = sender_address
        self.find = ["--session", session] if session else ["--host", sender_address]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        (tmp / "slowcat.py").write_text(SLOWCAT)
        (tmp / "stray.py").write_text(STRAY)

    def data(self, size: int, name: str = "input.bin") -> tuple[Path, str]:
        path = self.tmp / name
        path.write_bytes(os.urandom(size))
        return path, hashlib.sha256(path.read_bytes()).hexdigest()

    def slow(self, path: Path, step: int = 256 * 1024, pause: float = 0.05) -> str:
        return f"{sys.executable} {self.tmp / 'slowcat.py'} {path} {step} {pause}"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Run `ka ARGV...` as process `name`."""
        self._start(name, [sys.executable, "-m", "ka", *argv], env)

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        out = open(self.tmp / f"{name}.out", "wb")  # noqa: SIM115 - closed with the process
        err = open(self.tmp / f"{name}.err", "wb")  # noqa: SIM115
        full_env = dict(os.environ, **(env or {}))
        self.procs[name] = subprocess.Popen(
            self.wrap(name, argv), stdout=out, stderr=err, env=full_env, stdin=subprocess.DEVNULL,
        )
        out.close()
        err.close()

    def send(self, *args: str, nodes: int = 4) -> None:
        session = ["--session", self.session] if self.session else []
        self._spawn("sender", ["send", "--nodes", str(nodes), "--port", str(self.port),
                               "--bind", self.bind, "--json", *session,
                               "--report", str(self.tmp / "report.json"), *args])

    def strays(self, targets: list[str], udp: str) -> None:
        """From a process of its own (on a lab host when wrapped), open three connections to
        every `addr:port` target: half-open, random bytes, a hello without proof; send random
        bytes to the UDP `addr:port`; hold them all open until the cluster closes."""
        self._start("stray", [sys.executable, str(self.tmp / "stray.py"), udp, *targets])
        deadline = time.monotonic() + 10
        while b"ready" not in (self.tmp / "stray.out").read_bytes():
            if self.procs["stray"].poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"stray connections failed: {self.stderr('stray')}")
            time.sleep(0.05)

    def receive(self, name: str, *args: str, command: str | None = None,
                find: list[str] | None = None) -> None:
        """Start node `name`; `find` says how it finds the sender, if not as the others do."""
        consumer = command or f"sha256sum > {self.tmp / (name + '.sha')}"
        alone = "--go-now" in args and command is None  # a go-now that takes no data
        extra = [] if alone else ["--command", consumer]
        self._spawn(name, ["receive", *(find or self.find), "--port", str(self.port),
                           "--name", name, "--json", "--find-timeout", "10", *extra, *args])

    def nodes(self, n: int, *args: str) -> list[str]:
        names = [f"node{i}" for i in range(1, n + 1)]
        for name in names:
            self.receive(name, *args)
        return names

    def wait(self, name: str, timeout: float = 60.0) -> int:
        return self.procs[name].wait(timeout)

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in (self.tmp / f"{name}.out").read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def wait_event(self, name: str, kind: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in self.events(name):
                if ev.get("event") == kind:
                    return ev
            if self.procs[name].poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{name} never emitted {kind!r}; stderr: {self.stderr(name)}")

    def order(self) -> list[str]:
        """Node names in topology order, from the sender's start event."""
        start = self.wait_event("sender", "start")
        # A node prints its "joined" line after the sender has its join: under load the
        # sender's start can be read first.
        deadline = time.monotonic() + 10.0
        while True:
            by_id = {}
            for name in self.procs:
                if name == "sender":
                    continue
                for ev in self.events(name):
                    if ev.get("event") == "joined":
                        by_id[ev["node"]] = name
            if all(i in by_id for i in start["order"]) or time.monotonic() >= deadline:
                return [by_id[i] for i in start["order"]]
            time.sleep(0.05)

    def node_ids(self) -> dict[str, str]:
        out = {}
        for name in self.procs:
            for ev in self.events(name):
                if ev.get("event") == "joined" and name != "sender":
                    out[name] = ev["node"]
        return out

    def sha(self, name: str) -> str:
        return (self.tmp / f"{name}.sha").read_text().split()[0]

    def report(self) -> dict[str, Any]:
        return json.loads((self.tmp / "report.json").read_text())

    def node_report(self, name: str) -> dict[str, Any]:
        return next(n for n in self.report()["nodes"] if n["name"] == name)

    def stderr(self, name: str) -> str:
        return (self.tmp / f"{name}.err").read_text(errors="replace")[-2000:]

    def signal(self, name: str, sig: signal.Signals) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.kill(proc.pid, sig)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
