"""The node table: which MAC address is which node.

A text file, one node a line: `MAC [IP] [NAME]`, `#` starts a comment. It lets `ka pxe set`
take a node by IP address or name, and gives full-DHCP mode a fixed address per node
(dnsmasq `dhcp-host`), like the original's `dhcpd` data file.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ka.errors import UsageError

_MAC = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class NodeEntry:
    mac: str  # lower case, colon separated
    ip: str | None = None
    name: str | None = None


def normalize_mac(text: str) -> str | None:
    """`aa:bb:cc:dd:ee:ff` for any MAC spelling with : or -, else None."""
    if not _MAC.match(text):
        return None
    return text.lower().replace("-", ":")


def parse_nodes(text: str, filename: str = "<nodes>") -> tuple[NodeEntry, ...]:
    entries: list[NodeEntry] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        where = f"{filename}:{number}"
        mac = normalize_mac(words[0])
        if mac is None:
            raise UsageError(f"{where}: {words[0]!r} is not a MAC address",
                             hint="lines are: MAC [IP] [NAME], e.g. 52:54:00:12:34:01 10.0.0.11 n1")
        ip = name = None
        for word in words[1:]:
            try:
                ip_obj = ipaddress.IPv4Address(word)
            except ValueError:
                if name is not None or not _NAME.match(word):
                    raise UsageError(f"{where}: {word!r} is neither an IPv4 address nor a "
                                     "host name (or the line has two names)") from None
                name = word
            else:
                if ip is not None:
                    raise UsageError(f"{where}: two IP addresses on one line")
                ip = str(ip_obj)
        for key in (mac, ip, name):
            if key is not None and key in seen:
                raise UsageError(f"{where}: {key} is already on line {seen[key]}")
            if key is not None:
                seen[key] = number
        entries.append(NodeEntry(mac, ip, name))
    return tuple(entries)


def format_nodes(entries: Iterable[NodeEntry]) -> str:
    lines = ["# MAC [IP] [NAME]: nodes known to `ka pxe`"]
    for e in entries:
        lines.append(" ".join(w for w in (e.mac, e.ip, e.name) if w))
    return "\n".join(lines) + "\n"


def resolve_node(node: str, table: Iterable[NodeEntry]) -> str:
    """The MAC of `node`, given as a MAC, an IP address or a name from the table."""
    mac = normalize_mac(node)
    if mac is not None:
        return mac
    for entry in table:
        if node in (entry.ip, entry.name):
            return entry.mac
    raise UsageError(f"node {node!r} is not a MAC address and is not in the node table",
                     hint="give its MAC, or add 'MAC IP NAME' to the table (ka pxe config "
                          "--nodes FILE)")
