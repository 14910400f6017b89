"""Per-node host names: a pattern such as `node{n:02d}`, or a table keyed by MAC, IP or position."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ka.errors import UsageError

_MAC = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$", re.IGNORECASE)
# RFC 1123 host name label(s): letters, digits, hyphens; dots between labels.
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


@dataclass(frozen=True)
class HostnameRule:
    """`pattern` is formatted with n (1-based position in the plan session) and ip;
    `table` maps a MAC (lower case, colons), an IPv4/IPv6 address or a position to a name."""

    pattern: str | None = None
    table: tuple[tuple[str, str], ...] = ()
    # The n of position 1: the waves of a serving golden node count on from the last one.
    first: int = 1


def parse_pattern(pattern: str) -> HostnameRule:
    try:
        sample = pattern.format(n=1, ip="192.0.2.1")
    except (KeyError, IndexError, ValueError) as e:
        raise UsageError(
            f"bad host name pattern {pattern!r}: {e}",
            hint="use fields {n} (node position, e.g. {n:02d}) and {ip}",
        ) from e
    if "{" not in pattern:
        raise UsageError(
            f"host name pattern {pattern!r} has no {{n}} field and is not a readable file",
            hint="give a pattern like node{n:02d} or a table file of 'MAC|IP|POSITION NAME' lines",
        )
    _check_name(sample, pattern)
    return HostnameRule(pattern=pattern)


def parse_table(text: str, filename: str = "<hostnames>") -> HostnameRule:
    """Lines `KEY NAME`; '#' starts a comment. KEY is a MAC, an IP address or a position."""
    rows: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise UsageError(
                f"{filename}:{lineno}: expected 'KEY NAME', got {raw.strip()!r}",
                hint="KEY is a MAC address, an IP address or a node position (1, 2, ...)",
            )
        key = normalise_key(fields[0], f"{filename}:{lineno}")
        _check_name(fields[1], f"{filename}:{lineno}")
        if key in seen:
            raise UsageError(f"{filename}:{lineno}: {fields[0]} already given on line {seen[key]}")
        seen[key] = lineno
        rows.append((key, fields[1]))
    return HostnameRule(table=tuple(rows))


def normalise_key(key: str, where: str = "") -> str:
    if _MAC.match(key):
        return key.lower().replace("-", ":")
    if key.isdigit() and int(key) >= 1:
        return str(int(key))
    try:
        return str(ipaddress.ip_address(key))
    except ValueError:
        raise UsageError(
            f"{where}: {key!r} is neither a MAC address, an IP address nor a position"
        ) from None


def assign_hostname(
    rule: HostnameRule | None,
    position: int,
    macs: Iterable[str] = (),
    ips: Iterable[str] = (),
) -> str | None:
    """The name of the node at `position` with these interfaces; None when the rule says nothing.

    A table is searched by MAC first (it survives re-addressing), then IP, then position.
    """
    if rule is None:
        return None
    position += rule.first - 1
    ip_list = [str(ipaddress.ip_address(i)) for i in ips]
    if rule.pattern is not None:
        return rule.pattern.format(n=position, ip=ip_list[0] if ip_list else "")
    table = dict(rule.table)
    for mac in macs:
        name = table.get(mac.lower().replace("-", ":"))
        if name:
            return name
    for ip in ip_list:
        if ip in table:
            return table[ip]
    return table.get(str(position))


def hosts_line_update(text: str, old: str | None, new: str) -> str:
    """Point the 127.0.1.1 line (Debian's own-name line) at `new`, replacing `old` elsewhere.

    When there is no 127.0.1.1 line one is added after the localhost line.
    """
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    found = False
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if fields and fields[0] == "127.0.1.1":
            found = True
            out.append(f"127.0.1.1\t{new}\n")
            continue
        if old and old in fields[1:]:
            body = line.rstrip("\n")
            parts = re.split(r"(\s+)", body)
            ending = "\n" if line.endswith("\n") else ""
            line = "".join(new if p == old else p for p in parts) + ending
        out.append(line)
    if not found:
        at = next((i + 1 for i, x in enumerate(out) if x.split()[:1] == ["127.0.0.1"]), len(out))
        if out and not out[-1].endswith("\n") and at == len(out):
            out[-1] += "\n"
        out.insert(at, f"127.0.1.1\t{new}\n")
    return "".join(out)


def _check_name(name: str, where: str) -> None:
    if not _HOSTNAME.match(name):
        raise UsageError(f"{where}: {name!r} is not a valid host name")
