"""Fix-ups inside a freshly extracted clone, so that it boots as itself and not as the golden.

Everything here works on a directory tree (the node's target root), so it is tested on a
temporary directory without root; only ownership changes need privileges.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ka import run
from ka.clone.fstab import FstabRewrite, IdentityMap, rewrite_fstab, substitute_ids
from ka.clone.hostnames import hosts_line_update
from ka.clone.plan import ClonePlan, ExcludedDir


@dataclass(frozen=True)
class NewIdentity:
    """A node's new identity of one cloned partition."""

    disk: str
    number: int
    uuid: str | None
    partuuid: str | None
    label: str | None
    device: str


def identity_map(plan: ClonePlan, new: Iterable[NewIdentity]) -> IdentityMap:
    """Golden -> node references for every cloned partition, and the refs to disable."""
    uuids: dict[str, str] = {}
    partuuids: dict[str, str] = {}
    labels: dict[str, str] = {}
    devices: dict[str, str] = {}
    by_key = {(n.disk, n.number): n for n in new}
    for p in plan.partitions:
        n = by_key.get((p.disk, p.number))
        if n is None:
            continue
        if p.uuid and n.uuid:
            uuids[p.uuid] = n.uuid
        if p.partuuid and n.partuuid:
            partuuids[p.partuuid] = n.partuuid
        if p.label and n.label and p.label != n.label:
            labels[p.label] = n.label
        if n.uuid:
            for path in (p.device, *p.aliases) if p.device else p.aliases:
                devices[path] = n.uuid
    return IdentityMap(uuids, partuuids, labels, devices, frozenset(plan.excluded_refs))


def write_fstab(target: str, plan: ClonePlan, ids: IdentityMap) -> FstabRewrite:
    result = rewrite_fstab(plan.fstab, ids, disabled_note="disk left out of the clone")
    path = Path(target, "etc/fstab")
    if plan.fstab or path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _replace(path, result.text)
    return result


# Files that name filesystems by UUID/PARTUUID and must follow the new identities.
ID_FILES = (
    "boot/grub/grub.cfg",
    "boot/grub2/grub.cfg",
    "boot/grub/menu.lst",
    "etc/default/grub",
    "etc/crypttab",
    "etc/initramfs-tools/conf.d/resume",
    "etc/kernel/cmdline",
    "etc/lilo.conf",
)
ID_GLOBS = ("boot/efi/EFI/*/grub.cfg", "boot/loader/entries/*.conf", "etc/default/grub.d/*.cfg")


def rewrite_id_files(target: str, pairs: Mapping[str, str]) -> list[tuple[str, int]]:
    """Substitute old -> new UUIDs in the bootloader, crypttab and resume configuration.

    Returns (path in the clone, number of replacements) for every file that exists.
    """
    root = Path(target)
    paths = [root / p for p in ID_FILES]
    for pattern in ID_GLOBS:
        paths.extend(sorted(root.glob(pattern)))
    out = []
    for path in paths:
        if not path.is_file() or path.is_symlink():
            continue
        text = path.read_text(errors="surrogateescape")
        new, count = substitute_ids(text, pairs)
        if count:
            _replace(path, new)
        out.append(("/" + str(path.relative_to(root)), count))
    return out


def new_machine_id(target: str) -> str | None:
    """A fresh random machine-id where the clone has one (systemd and D-Bus copies)."""
    etc = Path(target, "etc/machine-id")
    dbus = Path(target, "var/lib/dbus/machine-id")
    if not etc.exists() and not dbus.exists():
        return None
    value = secrets.token_hex(16)
    for path in (etc, dbus):
        if path.is_symlink() or not path.exists():
            continue
        _replace(path, value + "\n", mode=0o444)
    return value


def set_hostname(target: str, name: str, golden: str | None) -> None:
    etc = Path(target, "etc")
    etc.mkdir(parents=True, exist_ok=True)
    _replace(etc / "hostname", name + "\n", mode=0o644)
    hosts = etc / "hosts"
    text = hosts.read_text() if hosts.exists() else "127.0.0.1\tlocalhost\n"
    _replace(hosts, hosts_line_update(text, golden, name), mode=0o644)


# Machine-specific state the clone must not inherit: persistent NIC names and DHCP leases.
STALE_GLOBS = (
    "etc/udev/rules.d/70-persistent-net.rules",
    "etc/udev/rules.d/75-persistent-net-generator.rules",
    "etc/dhcpc/*",
    "var/lib/dhcp/*.leases",
    "var/lib/dhcp/*.lease",
    "var/lib/dhclient/*",
    "var/lib/dhcpcd/*.lease",
    "var/lib/dhcpcd5/*.lease",
    "var/lib/NetworkManager/*.lease",
    "var/lib/systemd/random-seed",
)


def remove_stale_state(target: str) -> list[str]:
    root = Path(target)
    removed = []
    for pattern in STALE_GLOBS:
        for path in sorted(root.glob(pattern)):
            if path.is_file() or path.is_symlink():
                path.unlink()
                removed.append("/" + str(path.relative_to(root)))
    return removed


def regenerate_ssh_host_keys(target: str) -> tuple[list[str], str | None]:
    """Replace the golden's SSH host keys; returns (new key files, warning or None).

    The host's ssh-keygen writes the keys under the clone (`-A -f PREFIX`), so nothing has to
    run inside the clone. Without ssh-keygen the golden's keys are still removed: sharing a
    host key between machines is worse than a node that makes its own at first boot.
    """
    ssh = Path(target, "etc/ssh")
    old = sorted(ssh.glob("ssh_host_*_key")) + sorted(ssh.glob("ssh_host_*_key.pub"))
    if not old:
        return [], None
    for path in old:
        path.unlink()
    if not run.available("ssh-keygen"):
        return [], "ssh-keygen is missing: the golden's SSH host keys were removed, none made"
    run.run(["ssh-keygen", "-A", "-f", target])
    made = sorted("/" + str(p.relative_to(target)) for p in ssh.glob("ssh_host_*_key"))
    return made, None


def recreate_excluded(target: str, dirs: Sequence[ExcludedDir]) -> list[str]:
    """Make every excluded directory again, empty, with its golden mode and owner.

    Returns warnings (an owner that could not be set without root).
    """
    warnings = []
    for d in dirs:
        path = Path(target, d.path.lstrip("/"))
        path.mkdir(parents=True, exist_ok=True)
        try:
            os.chown(path, d.uid, d.gid, follow_symlinks=False)
        except PermissionError:
            warnings.append(f"{d.path}: owner {d.uid}:{d.gid} not set (needs root)")
        # chmod after chown: chown clears setuid/setgid bits.
        os.chmod(path, d.mode)
    return warnings


def _replace(path: Path, text: str, mode: int | None = None) -> None:
    """Write through a temporary file and rename, keeping the old mode and owner."""
    st = path.stat() if path.exists() and not path.is_symlink() else None
    tmp = path.with_name(f".{path.name}.ka-new")
    tmp.write_text(text, errors="surrogateescape")
    if st is not None:
        os.chmod(tmp, st.st_mode & 0o7777)
        try:
            os.chown(tmp, st.st_uid, st.st_gid)
        except PermissionError:
            pass
    elif mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)
