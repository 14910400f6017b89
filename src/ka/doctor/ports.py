"""Which local ports are taken, and by which process: read from /proc, never by binding.

Binding a port to test it would race with the server that is about to take it, and binding
67 or 69 needs root; /proc/net/{tcp,udp}{,6} lists every socket of this network namespace
whatever the user, and /proc/PID/fd tells which process holds one (all of them for root,
only the user's own otherwise).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

TCP_LISTEN = "0A"


@dataclass(frozen=True)
class Socket:
    protocol: str  # "tcp" or "udp"
    address: str  # as the kernel prints it, decoded: "0.0.0.0", "::", "127.0.0.1"
    port: int
    inode: int


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    # IPv6: four 32-bit words, each in host (little-endian) order.
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
    return str(ipaddress.IPv6Address(b"".join(words)))


def parse_proc_net(text: str, protocol: str) -> list[Socket]:
    """The sockets of one /proc/net/{tcp,udp}{,6} table that hold a local port: TCP
    listeners (a connection's local port does not stop a listener from binding) and every
    bound UDP socket."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or ":" not in fields[1]:
            continue
        hex_address, hex_port = fields[1].rsplit(":", 1)
        if protocol == "tcp" and fields[3] != TCP_LISTEN:
            continue
        out.append(Socket(protocol, _address(hex_address), int(hex_port, 16), int(fields[9])))
    return out


def bound_sockets(proc: Path = Path("/proc")) -> list[Socket]:
    out: list[Socket] = []
    for protocol in ("tcp", "udp"):
        for table in (protocol, protocol + "6"):
            try:
                text = (proc / "net" / table).read_text()
            except OSError:
                continue
            out += parse_proc_net(text, protocol)
    return out


def socket_holders(inodes: set[int], proc: Path = Path("/proc")) -> dict[int, list[Holder]]:
    """inode -> the processes holding that socket, among those whose fds we may read."""
    found: dict[int, list[Holder]] = {}
    if not inodes:
        return found
    wanted = {f"socket:[{i}]": i for i in inodes}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(entry / "fd")
        except OSError:
            continue
        command = ""
        for fd in fds:
            try:
                target = os.readlink(entry / "fd" / fd)
            except OSError:
                continue
            inode = wanted.get(target)
            if inode is None:
                continue
            if not command:
                try:
                    command = (entry / "comm").read_text().strip()
                except OSError:
                    command = "?"
            holders = found.setdefault(inode, [])
            if all(h.pid != int(entry.name) for h in holders):
                holders.append(Holder(int(entry.name), command))
    return found


@dataclass(frozen=True)
class PortUse:
    protocol: str
    port: int
    sockets: tuple[Socket, ...]  # empty: free
    holders: tuple[Holder, ...]  # empty with sockets: held by a process we may not see

    @property
    def taken(self) -> bool:
        return bool(self.sockets)

    def describe(self) -> str:
        if not self.taken:
            return "free"
        where = ", ".join(sorted({s.address for s in self.sockets}))
        if self.holders:
            who = ", ".join(f"{h.command} (pid {h.pid})" for h in self.holders)
        else:
            who = "a process this user cannot see (run as root to name it)"
        return f"taken on {where} by {who}"


def port_uses(wanted: list[tuple[str, int]], proc: Path = Path("/proc")) -> list[PortUse]:
    """For each (protocol, port): the sockets that hold it and their processes."""
    sockets = bound_sockets(proc)
    hit = [s for s in sockets if (s.protocol, s.port) in set(wanted)]
    holders = socket_holders({s.inode for s in hit}, proc)
    out = []
    for protocol, port in wanted:
        mine = tuple(s for s in hit if s.protocol == protocol and s.port == port)
        who: list[Holder] = []
        for s in mine:
            who += [h for h in holders.get(s.inode, []) if h not in who]
        out.append(PortUse(protocol, port, mine, tuple(who)))
    return out
