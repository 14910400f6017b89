"""The checks of `ka doctor`, one function per kind, each returning `Check`s: never raising
for what it finds (a missing tool is a result), never changing the machine.

A check is `missing` when the role cannot work without it, `warning` when ka may still work
(an optional tool, a loose key file), `ok` otherwise.
"""

from __future__ import annotations

import json
import os
import platform
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ka import run
from ka.disk.apply import mkfs_commands
from ka.disk.desc import parse_desc
from ka.disk.devices import check_disk_free
from ka.disk.layout import Layout
from ka.disk.probe import list_disks
from ka.doctor.ports import port_uses
from ka.errors import KaError
from ka.keys import read_golden_key, read_identity, read_key_file

Status = Literal["ok", "missing", "warning"]


@dataclass(frozen=True)
class Check:
    kind: str  # tool, filesystem, port, key, disks, interface, file, privileges
    name: str
    status: Status
    detail: str
    hint: str | None = None


def tools(required: Iterable[str], optional: Iterable[str] = (), why: str = "") -> list[Check]:
    out = []
    for tool, needed in [(t, True) for t in required] + [(t, False) for t in optional]:
        path = run.find(tool)
        if path is not None:
            out.append(Check("tool", tool, "ok", path))
            continue
        package = run.PACKAGES.get(tool)
        hint = f"apt-get install {package}" if package else None
        out.append(Check("tool", tool, "missing" if needed else "warning",
                         "not found in PATH" + ("" if needed else f" (needed {why})"), hint))
    return out


# A filesystem's kernel module, where its name differs from the filesystem's.
_MODULE = {"vfat": "vfat", "ext2": "ext4", "ext3": "ext4"}


def kernel_modules(release: str | None = None) -> set[str]:
    """Names of the filesystem modules this kernel can load or has built in."""
    base = Path("/lib/modules", release or platform.release())
    names: set[str] = set()
    for listing in ("modules.dep", "modules.builtin"):
        try:
            text = (base / listing).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            path = line.split(":", 1)[0]
            if "/fs/" in path:
                names.add(os.path.basename(path).split(".ko", 1)[0])
    return names


def kernel_filesystems(proc: Path = Path("/proc")) -> set[str]:
    try:
        text = (proc / "filesystems").read_text()
    except OSError:
        return set()
    return {line.split()[-1] for line in text.splitlines() if line.strip()}


def filesystems(needed: dict[str, bool], *, mounted: bool, known: set[str] | None = None,
                modules: set[str] | None = None) -> list[Check]:
    """For each filesystem: its mkfs tool, and when the node mounts it, the kernel's support.
    `needed[fs]` False: only a warning when it is missing (ka may not need it)."""
    known = kernel_filesystems() if known is None else known
    modules = kernel_modules() if modules is None else modules
    out = []
    for fs, required in needed.items():
        tool = mkfs_commands(fs, "/dev/null", label=None, uuid=None, size_bytes=1 << 30,
                             role="linux")[0][0]
        out += tools([tool] if required else [], [] if required else [tool],
                     why=f"for {fs} partitions")
        if fs == "swap" or not mounted:
            continue
        if fs in known:
            out.append(Check("filesystem", fs, "ok", "in /proc/filesystems"))
        elif _MODULE.get(fs, fs) in modules:
            out.append(Check("filesystem", fs, "ok",
                             f"module {_MODULE.get(fs, fs)} (loaded at the first mount)"))
        else:
            out.append(Check("filesystem", fs, "missing" if required else "warning",
                             "this kernel cannot mount it (not in /proc/filesystems, no module)",
                             "boot a kernel with it, or leave that partition without a mount "
                             "point"))
    return out


def layout_filesystems(desc_files: Sequence[str]) -> tuple[dict[str, bool], list[Check]]:
    """The filesystems of the layouts in `desc_files`, each required, and a check for each
    file that cannot be read."""
    needed: dict[str, bool] = {}
    problems = []
    for path in desc_files:
        try:
            layout: Layout = parse_desc(Path(path).read_text(), path)
        except (OSError, KaError) as e:
            problems.append(Check("file", path, "missing", f"cannot read the desc: {e}"))
            continue
        for p in layout.partitions:
            if p.fs:
                needed[p.fs] = True
    return needed, problems


def ports(wanted: Sequence[tuple[str, int]], why: dict[int, str],
          hint: str) -> list[Check]:
    """A line for each taken port, and one for all the free ones."""
    out = []
    free: list[tuple[str, int]] = []
    for use in port_uses(list(wanted)):
        if not use.taken:
            free.append((use.protocol, use.port))
            continue
        what = why.get(use.port, "")
        out.append(Check("port", f"{use.port}/{use.protocol}", "missing",
                         use.describe() + (f" ({what})" if what else ""),
                         hint.format(port=use.port, protocol=use.protocol)))
    if free:
        names = port_ranges(free)
        whats = list(dict.fromkeys(why[p] for _, p in free if p in why))
        out.append(Check("port", names, "ok", "free" + (f" ({', '.join(whats)})"
                                                       if whats else "")))
    return out


def port_ranges(ports: Sequence[tuple[str, int]]) -> str:
    """[("tcp", 1), ("udp", 1), ("tcp", 2), ("udp", 2)] -> "1-2/tcp+udp"."""
    by_port: dict[int, list[str]] = {}
    for protocol, port in ports:
        by_port.setdefault(port, []).append(protocol)
    groups: list[tuple[int, int, str]] = []
    for port in sorted(by_port):
        protocols = "+".join(sorted(set(by_port[port])))
        if groups and groups[-1][1] == port - 1 and groups[-1][2] == protocols:
            groups[-1] = (groups[-1][0], port, protocols)
        else:
            groups.append((port, port, protocols))
    return ", ".join((f"{a}" if a == b else f"{a}-{b}") + f"/{p}" for a, b, p in groups)


def key_file(path: str) -> list[Check]:
    try:
        mode = os.stat(path).st_mode
        read_key_file(path)
    except OSError as e:
        return [Check("key", path, "missing", f"cannot read it: {e.strerror}",
                      "make one with `ka keygen FILE`")]
    except KaError as e:
        return [Check("key", path, "missing", str(e), e.hint)]
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        return [Check("key", path, "warning", f"mode {stat.S_IMODE(mode):04o}: any user of "
                      "this machine can read the session key", f"chmod 600 {path}")]
    if mode & (stat.S_IRGRP | stat.S_IWGRP):
        return [Check("key", path, "warning", f"mode {stat.S_IMODE(mode):04o}: its group can "
                      "read it", f"chmod 600 {path}")]
    return [Check("key", path, "ok", f"mode {stat.S_IMODE(mode):04o}, a valid key")]


def identity(path: str | None, *, golden: bool) -> list[Check]:
    """The golden identity (its private key, on the golden) or its pinned public key (on a
    node): valid when given, a warning when not."""
    what = "golden identity" if golden else "golden key"
    if not path:
        option = "--identity" if golden else "--golden-key"
        return [Check("key", what, "warning", f"no {option}: any holder of the session key "
                      "could pose as the golden node", "make one with `ka keygen --identity "
                      "DIR`; the golden gives --identity DIR, the nodes --golden-key "
                      "DIR/golden.pub")]
    try:
        (read_identity if golden else read_golden_key)(path)
    except KaError as e:
        return [Check("key", what, "missing", str(e), e.hint)]
    return [Check("key", what, "ok", f"{path}: a valid key")]


def disks(*, want_free: bool) -> list[Check]:
    """The whole disks of this machine; for a node, which are free to be written."""
    if run.find("lsblk") is None:
        return [Check("disks", "disks", "missing", "cannot list disks without lsblk",
                      f"apt-get install {run.PACKAGES['lsblk']}")]
    try:
        found = list_disks()
    except KaError as e:
        return [Check("disks", "disks", "missing", f"cannot list disks: {e}", e.hint)]
    if not found:
        return [Check("disks", "disks", "missing" if want_free else "warning",
                      "no disk visible (lsblk lists none)",
                      "check the disk controller's driver is in the kernel")]
    if not want_free:
        return [Check("disks", "disks", "ok", "visible: " + ", ".join(found))]
    free, busy = [], []
    for disk in found:
        try:
            check_disk_free(disk)
            free.append(disk)
        except (KaError, OSError) as e:
            busy.append(f"{disk} ({e})")
    if free:
        detail = "free: " + ", ".join(free) + ("; in use: " + "; ".join(busy) if busy else "")
        return [Check("disks", "disks", "ok", detail)]
    return [Check("disks", "disks", "missing", "every disk is in use: " + "; ".join(busy),
                  "boot the node from the network (ka pxe) so that its disks are free")]


@dataclass(frozen=True)
class Interface:
    name: str
    addresses: tuple[str, ...]  # "10.0.0.1/24"
    up: bool
    loopback: bool


def interfaces() -> list[Interface]:
    result = run.run(["ip", "-json", "address"], check=False)
    try:
        data = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        return []
    out = []
    for link in data:
        flags = link.get("flags", [])
        addrs = tuple(f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                      if a.get("family") == "inet" and "local" in a)
        out.append(Interface(link.get("ifname", "?"), addrs, "UP" in flags, "LOOPBACK" in flags))
    return out


def default_route_interface(proc: Path = Path("/proc")) -> str | None:
    try:
        lines = (proc / "net" / "route").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            return fields[0]
    return None


def interface(bind: str | None, role: str) -> list[Check]:
    """The interface the nodes reach this machine through (or it reaches the golden by)."""
    if run.find("ip") is None:
        return [Check("interface", "interface", "warning", "cannot list interfaces without ip",
                      f"apt-get install {run.PACKAGES['ip']}")]
    links = interfaces()
    if bind and bind not in ("0.0.0.0", "::"):
        for link in links:
            if any(a.split("/")[0] == bind for a in link.addresses):
                status: Status = "ok" if link.up else "missing"
                return [Check("interface", link.name, status, f"{bind} on {link.name}"
                              + ("" if link.up else " (down)"), None if link.up
                              else f"ip link set {link.name} up")]
        return [Check("interface", bind, "missing", f"no interface of this machine has {bind}",
                      "give --bind an address of this machine (ip -4 address)")]
    usable = [i for i in links if i.up and not i.loopback and i.addresses]
    if not usable:
        return [Check("interface", "interface", "missing",
                      "no interface is up with an IPv4 address besides loopback",
                      "the nodes cannot reach this machine: bring up the cluster network")]
    default = default_route_interface()
    chosen = next((i for i in usable if i.name == default), usable[0])
    others = [i.name for i in usable if i is not chosen]
    detail = f"{chosen.name} {', '.join(chosen.addresses)}"
    if chosen.name == default:
        detail += " (default route)"
    if others:
        detail += "; also " + ", ".join(others)
    hint = None
    if others and role != "node":
        hint = "give --bind the address on the nodes' network if it is not this one"
    return [Check("interface", chosen.name, "ok", detail, hint)]


def privileges(why: str) -> list[Check]:
    if os.geteuid() == 0:
        return [Check("privileges", "root", "ok", "running as root")]
    return [Check("privileges", "root", "missing", f"not root: {why}", "run it as root")]


def files(paths: Iterable[tuple[str, str]]) -> list[Check]:
    """(path, package): files that a package installs (boot loaders)."""
    out = []
    for path, package in paths:
        if os.path.isfile(path):
            out.append(Check("file", path, "ok", f"from {package}"))
        else:
            out.append(Check("file", path, "missing", "not installed",
                             f"apt-get install {package}"))
    return out
