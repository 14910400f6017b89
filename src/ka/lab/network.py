"""The lab's network: N+1 test hosts on a private virtual switch.

Every host is a network namespace with one interface, `eth0`, the far end of a veth pair whose
near end is a port of a Linux bridge. The bridge lives in a namespace of its own, with no
uplink, so nothing sent inside the lab (TCP, UDP broadcasts to 255.255.255.255) can leave it,
and nothing is ever created in the root namespace: both ends of each veth pair are created
directly inside their namespaces.

Each port is shaped in both directions with a token bucket (tbf): the host's `eth0` shapes
what the host sends, the bridge port shapes what the host receives.

Token bucket parameters, and why (see `TokenBucket.for_rate`):
- burst = max(64 KiB, 4 ms of traffic): 64 KiB lets one full GSO super-packet of a veth pass
  in one piece (a smaller bucket makes tbf split or drop it), and 4 ms covers a timer tick of
  a kernel built with HZ=250, so the bucket never runs dry between two wake-ups, which would
  lose a share of the rate. At 100 Mbit/s that is 64 KiB, at 1 Gbit/s 500 kB.
- latency = 20 ms: the queue in front of the bucket holds 20 ms of traffic on top of the burst,
  at least one TCP window's worth for the lab's sub-millisecond round trips, so the bucket
  never idles while a sender has data; longer queues only add delay.
With these values a single TCP stream reaches about 95 % of the nominal rate, which is the
payload rate a real Ethernet link of the same speed gives (1500-byte frames: 1448 bytes of
TCP payload per 1538 bytes on the wire).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ka.errors import KaError, UsageError
from ka.run import Result, run, spawn

NAMESPACE_PREFIX = "ka-"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
MAX_NODES = 200
RATES = {"100mbit": 100_000_000, "1gbit": 1_000_000_000}


class LabError(KaError):
    """The lab could not be built, found or torn down."""


@dataclass(frozen=True)
class LabHost:
    index: int  # 0 = golden node, 1..N = nodes
    netns: str  # network namespace name
    address: str  # IPv4 on the lab bridge (private test range chosen by the lab)

    @property
    def label(self) -> str:
        return "golden" if self.index == 0 else f"node{self.index}"


@dataclass(frozen=True)
class TokenBucket:
    """tbf parameters for one direction of one port."""

    rate_bits: int
    burst_bytes: int
    latency_ms: int

    @classmethod
    def for_rate(cls, rate_bits: int) -> TokenBucket:
        four_ms = rate_bits // 8 // 250
        return cls(rate_bits=rate_bits, burst_bytes=max(64 * 1024, four_ms), latency_ms=20)

    def tc_args(self) -> list[str]:
        return [
            "tbf",
            "rate",
            f"{self.rate_bits}bit",
            "burst",
            str(self.burst_bytes),
            "latency",
            f"{self.latency_ms}ms",
        ]


def parse_rate(rate: str | None) -> int | None:
    """Bits per second for '100mbit', '1gbit', '250mbit', '10kbit'...; None or 'none' = unshaped."""
    if rate is None or rate.strip().lower() in ("", "none"):
        return None
    text = rate.strip().lower()
    if text in RATES:
        return RATES[text]
    match = re.fullmatch(r"(\d+)(kbit|mbit|gbit)", text)
    if match is None:
        raise UsageError(
            f"unknown link rate {rate!r}",
            hint="use 100mbit, 1gbit, none, or a number with kbit, mbit or gbit",
        )
    scale = {"kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}[match.group(2)]
    bits = int(match.group(1)) * scale
    if bits <= 0:
        raise UsageError(f"link rate {rate!r} must be positive")
    return bits


def unique_name() -> str:
    """A lab name that no parallel run picks: the pid plus a random suffix."""
    return f"t{os.getpid()}{secrets.token_hex(2)}"


def subnet_for(name: str) -> str:
    """10.254.X.0/24 with X from the lab name, so parallel labs use different ranges."""
    return f"10.254.{zlib.crc32(name.encode()) % 256}"


def existing_namespaces() -> set[str]:
    result = run(["ip", "netns", "list"])
    return {line.split()[0] for line in result.stdout.splitlines() if line.strip()}


class LabNetwork:
    """A virtual cluster network; a context manager that builds it and always tears it down."""

    def __init__(self, nodes: int, rate: str | None = None, name: str | None = None, *,
                 machines_only: bool = False) -> None:
        # A lab for virtual machines has the golden host alone: the machines plug taps into
        # its switch (ka.lab.vm) instead of being namespaces.
        least = 0 if machines_only else 1
        if not least <= nodes <= MAX_NODES:
            raise UsageError(f"a lab has {least} to {MAX_NODES} nodes, not {nodes}")
        self.name = name if name is not None else unique_name()
        if not NAME_PATTERN.match(self.name):
            raise UsageError(
                f"bad lab name {self.name!r}",
                hint="use 1 to 24 lowercase letters, digits or '-', not starting with '-'",
            )
        self.nodes = nodes
        self.rate_bits = parse_rate(rate)
        self.rate = rate if self.rate_bits is not None else None
        self.subnet = subnet_for(self.name)
        self.switch_netns = f"{NAMESPACE_PREFIX}{self.name}-switch"
        self.hosts: list[LabHost] = [
            LabHost(
                index=i,
                netns=f"{NAMESPACE_PREFIX}{self.name}-{'golden' if i == 0 else f'node{i}'}",
                address=f"{self.subnet}.{i + 1}",
            )
            for i in range(nodes + 1)
        ]
        # True once this object may remove the lab's namespaces: after up() checked that none
        # of them belonged to someone else, or when attached to a lab recorded as ours.
        self._owned = False

    # --- context manager -------------------------------------------------------------------

    def __enter__(self) -> LabNetwork:
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    # --- naming ----------------------------------------------------------------------------

    @property
    def namespaces(self) -> list[str]:
        return [self.switch_netns, *(h.netns for h in self.hosts)]

    @property
    def bridge(self) -> str:
        return "br0"

    def port(self, index: int) -> str:
        """The bridge port (in the switch namespace) of host `index`."""
        return f"p{index}"

    def host(self, node: int | str) -> LabHost:
        """Host by index or by name: 0, '0', 'golden', 'node3', '3'."""
        text = str(node).strip().lower()
        if text == "golden":
            index = 0
        elif text.startswith("node") and text[4:].isdigit():
            index = int(text[4:])
        elif text.isdigit():
            index = int(text)
        else:
            raise UsageError(f"unknown lab node {node!r}", hint="use golden, node1..nodeN or 0..N")
        if not 0 <= index <= self.nodes:
            raise UsageError(
                f"lab {self.name} has no node {node!r}",
                hint=f"nodes are golden (0) and node1..node{self.nodes}",
            )
        return self.hosts[index]

    # --- building and tearing down ---------------------------------------------------------

    def up(self) -> None:
        """Build the switch, the hosts, their links and shaping; on any failure remove it all."""
        if self._owned:
            raise LabError(f"lab {self.name} is already up")
        if os.geteuid() != 0:
            raise LabError(
                "building a lab needs root (network namespaces, links, qdiscs)",
                hint="run it as root, e.g. with sudo",
            )
        taken = existing_namespaces() & set(self.namespaces)
        if taken:
            raise LabError(
                f"lab {self.name} already exists (namespace {sorted(taken)[0]})",
                hint=f"remove it with 'ka lab down --name {self.name}' or choose another name",
            )
        self._owned = True
        try:
            self._build()
        except BaseException:
            self.down()
            raise

    def _build(self) -> None:
        sw = self.switch_netns
        self._ip("netns", "add", sw)
        self._ip("-n", sw, "link", "set", "lo", "up")
        self._ip("-n", sw, "link", "add", self.bridge, "type", "bridge", "stp_state", "0")
        self._ip("-n", sw, "link", "set", self.bridge, "up")
        for host in self.hosts:
            self._build_host(host)

    def _build_host(self, host: LabHost) -> None:
        sw, ns, port = self.switch_netns, host.netns, self.port(host.index)
        self._ip("netns", "add", ns)
        # Both ends are born inside their namespaces: nothing appears in the root namespace.
        self._ip("-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self._ip("-n", sw, "link", "set", port, "master", self.bridge)
        self._ip("-n", sw, "link", "set", port, "up")
        self._ip("-n", ns, "link", "set", "lo", "up")
        # `brd +` and the default route make 255.255.255.255 broadcasts leave through eth0.
        self._ip("-n", ns, "addr", "add", f"{host.address}/24", "brd", "+", "dev", "eth0")
        self._ip("-n", ns, "link", "set", "eth0", "up")
        self._ip("-n", ns, "route", "add", "default", "dev", "eth0")
        if self.rate_bits is not None:
            bucket = TokenBucket.for_rate(self.rate_bits)
            self._tc(ns, "eth0", bucket)
            self._tc(sw, port, bucket)

    def shape(self, index: int, rate: str) -> None:
        """Shape host `index`'s link both ways to `rate` (e.g. one slow node among fast ones)."""
        bits = parse_rate(rate)
        if bits is None:
            raise UsageError("a link is shaped to a rate, not 'none'")
        host = self.hosts[index]
        bucket = TokenBucket.for_rate(bits)
        self._tc(host.netns, "eth0", bucket)
        self._tc(self.switch_netns, self.port(host.index), bucket)

    def _ip(self, *args: str) -> Result:
        return run(["ip", *args], node=f"lab {self.name}")

    def _tc(self, netns: str, dev: str, bucket: TokenBucket) -> None:
        run(
            ["tc", "-n", netns, "qdisc", "replace", "dev", dev, "root", *bucket.tc_args()],
            node=f"lab {self.name}",
        )

    def down(self) -> None:
        """Remove every namespace of the lab (and with them the veths and the bridge).

        Idempotent. Processes still running inside the lab's hosts are ended first, since a
        namespace outlives its name while a process holds it.
        """
        if not self._owned:
            return
        present = existing_namespaces()
        mine = [ns for ns in self.namespaces if ns in present]
        self._end_processes(mine)
        errors: list[str] = []
        for ns in mine:
            result = run(["ip", "netns", "delete", ns], check=False)
            if result.returncode != 0:
                errors.append(f"{ns}: {result.stderr.strip()}")
        self._owned = False
        if errors:
            raise LabError(f"could not remove lab {self.name}: {'; '.join(errors)}")

    def _end_processes(self, namespaces: Sequence[str]) -> None:
        pids: set[int] = set()
        for ns in namespaces:
            result = run(["ip", "netns", "pids", ns], check=False)
            pids.update(int(p) for p in result.stdout.split() if p.isdigit())
        pids.discard(os.getpid())
        for sig in (signal.SIGTERM, signal.SIGKILL):
            alive = [pid for pid in pids if _signal(pid, sig)]
            deadline = time.monotonic() + 2.0
            while alive and time.monotonic() < deadline:
                time.sleep(0.05)
                alive = [pid for pid in alive if _exists(pid)]
            if not alive:
                return
            pids = set(alive)

    def adopt(self) -> None:
        """Take ownership of an existing lab of this name (one recorded by `ka lab up`)."""
        self._owned = True

    @property
    def is_up(self) -> bool:
        return self._owned

    # --- running commands on hosts ---------------------------------------------------------

    def argv(self, host: int, argv: Sequence[str]) -> list[str]:
        """`argv` on a host: in its network namespace, with its lab name (golden, node1...)
        as host name in a UTS namespace of its own (ka.lab.uts)."""
        h = self.hosts[host]
        return ["ip", "netns", "exec", h.netns, sys.executable, "-m", "ka.lab.uts", h.label,
                *argv]

    def run(self, host: int, argv: Sequence[str], **kw: Any) -> Result:
        kw.setdefault("node", self.hosts[host].label)
        return run(self.argv(host, argv), **kw)

    def spawn(self, host: int, argv: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
        return spawn(self.argv(host, argv), **kw)


def _signal(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _exists(pid: int) -> bool:
    """True while `pid` runs; a zombie counts as gone (its parent reaps it, not us)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
