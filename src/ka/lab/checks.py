"""Checks of a cloned disk beyond its file tree: what the fix-ups changed, and the disk itself.

- the partition table is the planned one (`sfdisk --json`);
- every `UUID=` in the clone's fstab is the real UUID (`blkid -p`) of the partition planned
  for that mount point, and no fstab entry was dropped or altered otherwise;
- machine-ids are valid and all different (from each other and from the golden node);
- hostnames are the assigned ones; the SSH host keys are not the golden node's;
- the EFI system partition (vfat, which this kernel may not mount) holds the golden files,
  read with mtools.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ka.disk.devices import blkid_probe
from ka.lab.verify import hash_file
from ka.run import run


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""

    def describe(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}" + (f": {self.detail}" if self.detail
                                                                  else "")


@dataclass(frozen=True)
class ExpectedPartition:
    """One partition as planned: sectors of 512 bytes."""

    number: int
    start: int
    size: int
    fstype: str | None       # ext4, xfs, vfat, swap, None
    mountpoint: str | None   # "/", "/var", "/boot/efi", None


@dataclass(frozen=True)
class FstabLine:
    spec: str
    mountpoint: str
    fstype: str
    options: str
    rest: tuple[str, ...]


def parse_fstab(text: str) -> list[FstabLine]:
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        f = line.split()
        f += ["", "", "", "defaults", "0", "0"][len(f):]
        out.append(FstabLine(f[0], f[1], f[2], f[3], tuple(f[4:])))
    return out


def check_partition_table(disk: str, expected: Sequence[ExpectedPartition],
                          label: str = "gpt") -> Check:
    table = json.loads(run(["sfdisk", "--json", disk]).stdout)["partitiontable"]
    got = {int(re.sub(r".*\D", "", p["node"])): (int(p["start"]), int(p["size"]))
           for p in table.get("partitions", [])}
    want = {p.number: (p.start, p.size) for p in expected}
    problems = []
    if table.get("label") != label:
        problems.append(f"label {table.get('label')!r}, expected {label!r}")
    for number in sorted(set(got) | set(want)):
        if got.get(number) != want.get(number):
            problems.append(f"partition {number}: (start, sectors) {got.get(number)}, "
                            f"expected {want.get(number)}")
    detail = "; ".join(problems) or f"{len(want)} partitions as planned"
    return Check("partition table", not problems, detail)


def check_fstab(golden_fstab: str, clone_fstab: str, expected: Sequence[ExpectedPartition],
                devices: Mapping[int, str]) -> Check:
    """`devices`: partition number -> device node of the clone's disk."""
    golden, clone = parse_fstab(golden_fstab), parse_fstab(clone_fstab)
    real = {n: blkid_probe(dev) for n, dev in devices.items()}
    by_uuid = {v["UUID"]: n for n, v in real.items() if "UUID" in v}
    by_mount = {p.mountpoint or "swap": p for p in expected if p.fstype}
    problems = []
    if len(clone) != len(golden):
        problems.append(f"{len(clone)} entries, the golden fstab has {len(golden)}")
    for g, c in zip(golden, clone, strict=False):
        if (g.mountpoint, g.fstype, g.options, g.rest) != (c.mountpoint, c.fstype, c.options,
                                                           c.rest):
            problems.append(f"entry for {g.mountpoint} changed: {c.mountpoint} {c.fstype} "
                            f"{c.options}")
        if not c.spec.startswith("UUID="):
            if g.spec != c.spec:
                problems.append(f"{c.mountpoint}: spec {c.spec}, golden has {g.spec}")
            continue
        uuid = c.spec[5:]
        number = by_uuid.get(uuid)
        key = "swap" if c.fstype == "swap" else c.mountpoint
        planned = by_mount.get(key)
        if number is None:
            problems.append(f"{c.mountpoint}: UUID {uuid} is on no partition of the clone")
        elif planned is None or planned.number != number:
            problems.append(f"{c.mountpoint}: UUID {uuid} is partition {number}, planned "
                            f"{planned.number if planned else 'none'}")
        elif real[number].get("TYPE") != c.fstype:
            problems.append(f"{c.mountpoint}: partition {number} holds "
                            f"{real[number].get('TYPE')}, fstab says {c.fstype}")
    return Check("fstab UUIDs", not problems,
                 "; ".join(problems) or f"{len(clone)} entries, UUIDs match the partitions")


def check_identities(golden_id: str, machine_ids: Mapping[str, str]) -> Check:
    """machine-id of each clone (by node name) vs each other and the golden one."""
    problems = []
    for node, mid in machine_ids.items():
        if not re.fullmatch(r"[0-9a-f]{32}", mid):
            problems.append(f"{node}: machine-id {mid!r} is not 32 hex digits")
        if mid == golden_id:
            problems.append(f"{node}: machine-id is the golden node's")
    seen: dict[str, str] = {}
    for node, mid in machine_ids.items():
        if mid in seen:
            problems.append(f"{node} and {seen[mid]} share machine-id {mid}")
        seen.setdefault(mid, node)
    return Check("machine-ids unique", not problems,
                 "; ".join(problems) or f"{len(machine_ids)} distinct")


def check_hostname(node: str, hostname: str, assigned: Iterable[str]) -> Check:
    allowed = set(assigned)
    ok = hostname in allowed
    return Check("hostname", ok, hostname if ok else
                 f"{node}: hostname {hostname!r}, expected one of {sorted(allowed)}")


def check_ssh_keys(golden_root: str, clone_root: str) -> Check:
    same = []
    for path in sorted(Path(golden_root, "etc/ssh").glob("ssh_host_*_key")):
        clone = Path(clone_root, "etc/ssh", path.name)
        if clone.exists() and clone.read_bytes() == path.read_bytes():
            same.append(path.name)
    return Check("ssh host keys renewed", not same,
                 f"still the golden node's: {', '.join(same)}" if same else "")


def esp_contents(device: str) -> dict[str, str]:
    """Relative path -> BLAKE3 of every file on a vfat partition, read with mtools."""
    with tempfile.TemporaryDirectory(prefix="ka-esp-") as tmp:
        env = {"MTOOLS_SKIP_CHECK": "1"}
        listing = run(["mdir", "-i", device, "-/", "-b", "::/"], check=False, env=env)
        if listing.returncode != 0:
            return {}
        run(["mcopy", "-s", "-n", "-i", device, "::/*", tmp], env=env)
        out = {}
        for dirpath, _dirs, files in os.walk(tmp):
            for name in files:
                full = os.path.join(dirpath, name)
                out[os.path.relpath(full, tmp)] = hash_file(full)
        return out


def check_esp(golden_device: str, clone_device: str, raw: bool) -> Check:
    g, c = esp_contents(golden_device), esp_contents(clone_device)
    problems = []
    if not g:
        problems.append("the golden ESP holds no files")
    if g != c:
        missing = sorted(set(g) - set(c))
        differ = sorted(p for p in set(g) & set(c) if g[p] != c[p])
        problems.append(f"files differ (missing {missing}, changed {differ})")
    if raw and not problems and hash_file(golden_device) != hash_file(clone_device):
        problems.append("raw copy is not byte-identical")
    return Check("ESP (vfat)" + (" raw copy" if raw else ""), not problems,
                 "; ".join(problems) or f"{len(c)} files identical")
