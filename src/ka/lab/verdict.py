"""Whether one cloned disk is a faithful clone of the golden disk: tree, table, fix-ups.

The node's disk is mounted read-only here, in the root mount namespace: the mounts that
`ka install` made inside `ip netns exec` vanished with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ka.lab.checks import (
    Check,
    ExpectedPartition,
    check_esp,
    check_fstab,
    check_hostname,
    check_partition_table,
    check_ssh_keys,
)
from ka.lab.disks import Image, mounted_tree
from ka.lab.golden import IDENTITY_FILES, REMOVED_BY_FIXUPS
from ka.lab.verify import TreeDiff, TreeDigest, compare, digest_tree

# What `ka install` leaves in the clone on purpose: its own report and log.
INSTALL_RECORDS = ("var/log/ka-install.json", "var/log/ka", "var/log/ka/*")
REPORT_PATH = "var/log/ka-install.json"
FIXED_UP = IDENTITY_FILES + REMOVED_BY_FIXUPS + INSTALL_RECORDS


@dataclass(frozen=True)
class GoldenReference:
    """What every clone is compared against, taken once from the mounted golden disk."""

    root: Path
    digest: TreeDigest
    fstab: str
    machine_id: str
    esp_device: str
    excluded: tuple[str, ...]      # relative paths whose contents are not cloned
    raw_esp: bool
    ignore: tuple[str, ...] = ()   # more paths the clone may change (beside FIXED_UP)


@dataclass(frozen=True)
class NodeVerdict:
    node: str
    machine_id: str = ""
    hostname: str = ""
    tree: TreeDiff | None = None
    checks: tuple[Check, ...] = field(default=())
    report: dict[str, Any] | None = None      # the install report kept in the clone

    @property
    def ok(self) -> bool:
        return self.tree is not None and self.tree.ok and all(c.ok for c in self.checks)

    def describe(self) -> str:
        lines = [f"{self.node}: {'verified' if self.ok else 'NOT verified'}"]
        if self.tree is not None:
            lines.append(f"  tree: {self.tree.describe(limit=20)}".replace("\n", "\n    "))
        lines += [f"  {c.describe()}" for c in self.checks]
        return "\n".join(lines)


def judge_node(node: str, image: Image, expected: Sequence[ExpectedPartition],
               golden: GoldenReference, assigned_names: Sequence[str], where: Path,
               label: str = "gpt", by_position: bool = True) -> NodeVerdict:
    expected = tuple(expected)
    image.partition_nodes()
    checks = [check_partition_table(image.device, expected, label)]
    ignore = FIXED_UP + golden.ignore
    with mounted_tree(image, expected, where, read_only=True) as root:
        digest = digest_tree(root, prune=golden.excluded, ignore=ignore)
        tree = compare(golden.digest, digest, ignore=ignore)
        clone_fstab = read_text(root / "etc/fstab")
        machine_id = read_text(root / "etc/machine-id").strip()
        hostname = read_text(root / "etc/hostname").strip()
        devices = {p.number: image.partition(p.number) for p in expected}
        checks.append(check_fstab(golden.fstab, clone_fstab, expected, devices))
        report = _report(root / REPORT_PATH)
        position = (report or {}).get("position")
        if by_position and isinstance(position, int) and 1 <= position <= len(assigned_names):
            # The name is the one of the node's position in the plan session.
            assigned_names = [assigned_names[position - 1]]
        checks.append(check_hostname(node, hostname, assigned_names))
        checks.append(check_ssh_keys(str(golden.root), str(root)))
        hosts = read_text(root / "etc/hosts")
        named = bool(hostname) and hostname in hosts.split()
        checks.append(Check("/etc/hosts names the node", named,
                            "" if named else f"no {hostname!r} in /etc/hosts"))
        left = [p for p in REMOVED_BY_FIXUPS if os.path.lexists(root / p)]
        checks.append(Check("network identity removed", not left,
                            f"still there: {', '.join(left)}" if left else ""))
        full = [d for d in golden.excluded if (root / d).is_dir() and any((root / d).iterdir())]
        checks.append(Check("excluded directories empty", not full,
                            f"not empty: {', '.join(full)}" if full
                            else f"{len(golden.excluded)} excluded"))
    esp = next((p for p in expected if p.fstype == "vfat"), None)
    if esp is not None:
        checks.append(check_esp(golden.esp_device, image.partition(esp.number), golden.raw_esp))
    return NodeVerdict(node, machine_id, hostname, tree, tuple(checks), report)


def _report(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_text(path: Path) -> str:
    """A file of a clone as text; "" when it is missing or unreadable."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
