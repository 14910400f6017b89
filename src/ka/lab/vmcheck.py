"""Judging one lab virtual machine: what its serial console printed, and what is on its disk.

A machine that was to be cloned passes when its console shows, in this order, the boot
environment's successful install and then the golden system's marker line, and the marker
shows a system of its own: the host name the golden node gave it, a machine-id unlike the
golden's and every other clone's, and a root filesystem whose UUID is the one on its own disk
(not the golden's) and the one its fstab mounts. A machine that was to fail (a disk too small)
passes when its install failed with that reason in the golden node's report, it never booted
a clone, and it was left on "ka" boot.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ka import disk
from ka.boot.state import load_state
from ka.boot.switch import boot_states
from ka.disk.devices import blkid_probe
from ka.errors import KaError
from ka.lab.debian import MARKER
from ka.lab.disks import Image, expected_partitions, mounted_tree
from ka.lab.verdict import read_text

INSTALLED = "ka: install succeeded; rebooting"
STAGE2 = "ka: stage2 received and unpacked"  # stage1 got stage2 through the chain
GIVE_UP = "could not install this node"
_MARKER_FIELD = re.compile(r"(\S+)=(\S*)")


@dataclass(frozen=True)
class GoldenIdentity:
    hostname: str
    machine_id: str
    root_uuid: str


@dataclass(frozen=True)
class MachineOutcome:
    name: str
    mac: str
    expect_failure: bool
    seconds: float
    marker: dict[str, str] | None        # the marker line's fields, if it was printed
    node: dict[str, Any] | None          # the golden node's summary entry for this machine
    problems: tuple[str, ...]
    installed: bool = False              # its console showed the boot environment's success
    gave_up: bool = False                # ... or the boot environment giving up
    console_tail: str = ""
    disk: dict[str, str] = field(default_factory=dict)  # what its disk holds after the run
    firmware: str = "bios"
    boot_entry: str | None = None        # what `ka pxe` boots it by after the run

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def result(self) -> str:
        if self.expect_failure:
            return "failed, as it must" if self.ok else "WRONG"
        return "booted its clone" if self.ok else "FAILED"


def parse_marker(lines: Sequence[str]) -> tuple[int, dict[str, str]] | None:
    """(line index, fields) of the last marker line on a console."""
    for i in range(len(lines) - 1, -1, -1):
        # Anywhere in the line: systemd's status lines share the serial console, and on a
        # loaded machine one can be written just before the marker, on the same line.
        at = lines[i].find(MARKER + " ")
        if at >= 0:
            return i, dict(_MARKER_FIELD.findall(lines[i][at:]))
    return None


def summary_node(reports: Path, mac: str) -> dict[str, Any] | None:
    """The golden node's record of the machine with this MAC (its summary.json)."""
    try:
        summary = json.loads((reports / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    for node in summary.get("nodes", []):
        if isinstance(node, dict) and str(node.get("mac") or "").lower() == mac.lower():
            return node
    return None


def boot_entries(state_dir: Path) -> tuple[dict[str, str], str]:
    """What `ka pxe` boots each machine with menus of its own, by MAC (lowercase, with colons),
    and what the others boot.

    Read as data from the PXE state (ka.boot), the same way `ka pxe show` reads it.
    """
    config = load_state(str(state_dir))
    return ({key: str(entry) for key, entry in boot_states(config).items()}, str(config.default))


def judge_machine(name: str, lines: Sequence[str], disk_image: Path, desc: str,
                  golden: GoldenIdentity, *, expect_failure: bool, reports: Path,
                  boot_entry: str | None, mac: str, seconds: float, workdir: Path,
                  firmware: str = "bios") -> MachineOutcome:
    """`boot_entry`: what `ka pxe` now boots this machine by ("ka" or "local")."""
    problems: list[str] = []
    found = parse_marker(lines)
    marker = found[1] if found else None
    node = summary_node(reports, mac)
    entry = boot_entry
    on_disk: dict[str, str] = {}
    installed = [i for i, line in enumerate(lines) if INSTALLED in line]
    gave_up = any(GIVE_UP in line for line in lines)
    if expect_failure:
        if node is None or node.get("result") != "failed":
            problems.append(f"the golden node did not report its install as failed: {node}")
        elif "small" not in str(node.get("reason") or ""):
            problems.append(f"its failure reason does not say the disk is too small: "
                            f"{node.get('reason')}")
        if marker is not None:
            problems.append("it booted a clone although its install failed")
        if installed:
            problems.append("its console shows a successful install")
        if not gave_up:
            problems.append("its console never showed the boot environment giving up")
        if entry != "ka":
            problems.append(f"it was switched to {entry!r} boot; a failed node stays on 'ka'")
    else:
        if not installed:
            problems.append("its console never showed a successful install")
        stage2 = [i for i, line in enumerate(lines) if STAGE2 in line]
        if not stage2:
            problems.append("its console never showed stage2 received through the chain")
        elif installed and stage2[0] > installed[0]:
            problems.append("stage2 came after the install")
        if found is None or marker is None:
            problems.append("its console never showed the clone's marker (the clone did not "
                            "boot, or did not reach multi-user)")
        elif installed and found[0] < installed[0]:
            problems.append("the marker came before the install")
        if node is None or node.get("result") != "ok":
            problems.append(f"the golden node did not report its install as ok: {node}")
        if entry != "local":
            problems.append(f"ka clone --pxe left it on {entry!r} boot, not 'local'")
        if marker is not None:
            expected_name = str(node.get("name")) if node else None
            if marker.get("hostname") != expected_name:
                problems.append(f"host name {marker.get('hostname')!r}, the golden node "
                                f"named it {expected_name!r}")
            mid = marker.get("machine-id", "")
            if not re.fullmatch(r"[0-9a-f]{32}", mid):
                problems.append(f"machine-id {mid!r} is not 32 hex digits")
            if mid == golden.machine_id:
                problems.append("it kept the golden machine-id")
            if marker.get("root-uuid") == golden.root_uuid:
                problems.append("its root filesystem kept the golden UUID")
            if marker.get("firmware") != firmware:
                problems.append(f"it booted by {marker.get('firmware')!r} firmware, not "
                                f"{firmware!r}")
            try:
                on_disk = read_disk(disk_image, desc, workdir / name)
            except (KaError, OSError) as e:
                problems.append(f"its disk could not be read back: {e}")
            for key, value in (("hostname", marker.get("hostname")),
                               ("machine-id", mid), ("root-uuid", marker.get("root-uuid"))):
                if on_disk.get(key) != value:
                    problems.append(f"{key} on its disk is {on_disk.get(key)!r}, "
                                    f"its console said {value!r}")
            if f"UUID={on_disk.get('root-uuid')}" != on_disk.get("fstab-root"):
                problems.append(f"its fstab mounts / from {on_disk.get('fstab-root')!r}, "
                                f"not its root UUID {on_disk.get('root-uuid')!r}")
    return MachineOutcome(name, mac, expect_failure, seconds, marker, node, tuple(problems),
                          bool(installed), gave_up,
                          "\n".join(line for line in lines[-25:] if line.strip()), on_disk,
                          firmware, boot_entry)


def read_disk(image: Path, desc: str, where: Path) -> dict[str, str]:
    """Host name, machine-id, root UUID and fstab's / of a machine's disk, mounted read-only.

    A file that is missing reads as "": the comparison with the console then says what.
    """
    size = image.stat().st_size
    expected = expected_partitions(desc, size)
    root = next(p for p in expected if p.mountpoint == "/")
    out: dict[str, str] = {}
    with disk.LoopDevice(str(image), read_only=True) as loop:
        attached = Image(image, size, loop.device)
        disk.ensure_partition_nodes(loop.device, {root.number})
        out["root-uuid"] = blkid_probe(attached.partition(root.number)).get("UUID", "")
        with mounted_tree(attached, (root,), where, read_only=True) as tree:
            out["hostname"] = read_text(tree / "etc/hostname").strip()
            out["machine-id"] = read_text(tree / "etc/machine-id").strip()
            for line in read_text(tree / "etc/fstab").splitlines():
                words = line.split()
                if len(words) >= 2 and words[1] == "/" and not line.startswith("#"):
                    out["fstab-root"] = words[0]
    return out


def distinct_machine_ids(outcomes: Sequence[MachineOutcome]) -> list[str]:
    """Problems if two clones share a machine-id."""
    seen: dict[str, str] = {}
    problems = []
    for o in outcomes:
        mid = (o.marker or {}).get("machine-id")
        if not mid:
            continue
        if mid in seen:
            problems.append(f"{o.name} and {seen[mid]} share the machine-id {mid}")
        seen[mid] = o.name
    return problems


def summary_lines(outcomes: Sequence[MachineOutcome]) -> list[str]:
    head = (f"{'machine':<8} {'firmware':<8} {'mac':<18} {'result':<18} {'time s':>7}  "
            "hostname  machine-id")
    out = [head, "-" * len(head)]
    for o in outcomes:
        m = o.marker or {}
        out.append(f"{o.name:<8} {o.firmware:<8} {o.mac:<18} {o.result:<18} {o.seconds:>7.0f}  "
                   f"{m.get('hostname', '-'):<9} {m.get('machine-id', '-')}")
    for o in outcomes:
        for p in o.problems:
            out.append(f"{o.name}: {p}")
    return out
