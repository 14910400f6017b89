"""The node's network interfaces, and the one it reaches the golden node through.

A node reports the MAC and IP address of that interface, so that the golden node can tell
`ka pxe` which node to switch to local boot (`ka clone --pxe`): in the boot environment it is
the interface that got the DHCP lease, the one the node network-booted from.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import socket
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ka import run
from ka.boot.nodes import normalize_mac

SIOCGIFADDR = 0x8915  # linux/sockios.h: an interface's (primary) IPv4 address
ARPHRD_LOOPBACK = 772  # /sys/class/net/IF/type of a loopback interface


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str | None  # lower case with colons; None for loopback and links without one
    addresses: tuple[str, ...]
    loopback: bool = False


@dataclass(frozen=True)
class Uplink:
    """How this node reaches the golden node: the interface, its MAC, the source address."""

    interface: str | None
    mac: str | None
    ip: str | None


def interfaces() -> list[Interface]:
    """Every interface with its MAC and addresses: from `ip -json address`, or, where `ip`
    is missing or has no JSON output (busybox), from sysfs and the kernel's interface ioctl."""
    if run.available("ip"):
        result = run.run(["ip", "-json", "address"], check=False)
        try:
            links = json.loads(result.stdout or "")
        except ValueError:
            links = None
        if isinstance(links, list) and links:
            return parse_ip_json(links)
    return _from_sysfs()


def parse_ip_json(links: Sequence[Mapping[str, Any]]) -> list[Interface]:
    out = []
    for link in links:
        loopback = link.get("link_type") == "loopback"
        mac = None if loopback else _link_mac(str(link.get("address") or ""))
        addresses = tuple(str(a["local"]) for a in link.get("addr_info", []) if a.get("local"))
        out.append(Interface(str(link.get("ifname") or ""), mac, addresses, loopback))
    return out


def _from_sysfs(sys_net: str = "/sys/class/net") -> list[Interface]:
    out: list[Interface] = []
    try:
        names = sorted(os.listdir(sys_net))
    except OSError:
        return out
    for name in names:
        loopback = _read(os.path.join(sys_net, name, "type")) == str(ARPHRD_LOOPBACK)
        mac = None if loopback else _link_mac(_read(os.path.join(sys_net, name, "address")))
        ip = _ipv4_of(name)
        out.append(Interface(name, mac, (ip,) if ip else (), loopback))
    return out


def _ipv4_of(name: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:  # no IPv4 address on this interface
            return None
    return socket.inet_ntoa(raw[20:24])


def local_interfaces(
    found: Sequence[Interface] | None = None,
) -> tuple[list[str], list[str]]:
    """MAC addresses and IP addresses of this machine's interfaces (loopback left out)."""
    found = [i for i in (interfaces() if found is None else found) if not i.loopback]
    return [i.mac for i in found if i.mac], [a for i in found for a in i.addresses]


def source_address(peer: str) -> str | None:
    """The local address this machine uses to reach `peer` (the kernel's route choice).

    Connecting a UDP socket sends nothing; it only makes the kernel pick the route.
    """
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(peer).version == 6 else socket.AF_INET
    except ValueError:
        try:
            family, *_, sockaddr = socket.getaddrinfo(peer, 9, type=socket.SOCK_DGRAM)[0]
            peer = str(sockaddr[0])
        except OSError:
            return None
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((peer, 9))
        except OSError:
            return None
        return str(s.getsockname()[0])


def uplink(peer: str, found: Sequence[Interface] | None = None) -> Uplink:
    """The interface, MAC and address by which this machine reaches `peer` (an address, or
    ADDR:PORT as the transport names a sender)."""
    host = _host(peer)
    ip = source_address(host)
    if ip is None:
        return Uplink(None, None, None)
    for iface in interfaces() if found is None else found:
        if ip in iface.addresses:
            return Uplink(iface.name, iface.mac, ip)
    return Uplink(None, None, ip)


def _host(peer: str) -> str:
    """"10.0.0.1:30765" -> "10.0.0.1"; "[fd00::1]:30765" -> "fd00::1"; a bare address as is."""
    try:
        return str(ipaddress.ip_address(peer))
    except ValueError:
        return peer.rpartition(":")[0].strip("[]") if ":" in peer else peer


def _link_mac(text: str) -> str | None:
    """An interface's MAC as the node table writes it; None for a link without one (all
    zeros, or no Ethernet-style address: a tunnel, a WireGuard link)."""
    mac = normalize_mac(text.strip())
    return None if mac == "00:00:00:00:00:00" else mac


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""
