"""Rewriting the clone's references to its own filesystems (pure text functions).

A node formats its partitions with new UUIDs (and new GPT partition GUIDs), so every file that
names a filesystem by identity must follow: fstab first of all, then the bootloader
configuration, crypttab and the initramfs resume setting. The original rewrote fstab to
`/dev/sdX` names and dropped every other line; here every line is kept, comments included,
and only the device field of entries that name a cloned filesystem changes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# Prefixes by which fstab, crypttab and kernel command lines name a filesystem.
_TAGGED = ("UUID=", "PARTUUID=", "LABEL=", "PARTLABEL=")
_BY_DIR = {
    "/dev/disk/by-uuid/": "uuid",
    "/dev/disk/by-partuuid/": "partuuid",
    "/dev/disk/by-label/": "label",
}
IDENTITY_DIRS = tuple(_BY_DIR)  # links named by an identity, translated as that identity


@dataclass(frozen=True)
class IdentityMap:
    """How each golden filesystem reference translates to the node's.

    `devices` maps a golden device path (`/dev/sda2`) to the node's new UUID, because device
    names are not stable across machines: such entries are rewritten as `UUID=...`.
    `commented` holds golden references (any form) whose entries must be disabled on the
    node, e.g. filesystems of a disk left out with `--exclude-disk`.
    """

    uuids: Mapping[str, str] = field(default_factory=dict)
    partuuids: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    devices: Mapping[str, str] = field(default_factory=dict)
    commented: frozenset[str] = frozenset()

    def translate(self, spec: str) -> str | None:
        """The node's spelling of fstab device field `spec`, or None when it is not cloned."""
        upper = spec.upper()
        for tag in _TAGGED:
            if upper.startswith(tag):
                value = _unquote(spec[len(tag) :])
                return self._translate_tag(tag, value)
        for prefix, kind in _BY_DIR.items():
            if spec.startswith(prefix):
                value = spec[len(prefix) :]
                new = self._lookup(kind, value)
                return None if new is None else prefix + new
        if spec in self.devices:
            return f"UUID={self.devices[spec]}"
        return None

    def _translate_tag(self, tag: str, value: str) -> str | None:
        kind = {"UUID=": "uuid", "PARTUUID=": "partuuid", "LABEL=": "label"}.get(tag)
        if kind is None:
            return None
        new = self._lookup(kind, value)
        return None if new is None else tag + new

    def _lookup(self, kind: str, value: str) -> str | None:
        table: Mapping[str, str] = {
            "uuid": self.uuids,
            "partuuid": self.partuuids,
            "label": self.labels,
        }[kind]
        if kind == "label":
            return table.get(value)
        return _get_ci(table, value)

    def is_commented(self, spec: str) -> bool:
        if spec in self.commented:
            return True
        upper = spec.upper()
        for tag in _TAGGED:
            if upper.startswith(tag) and _unquote(spec[len(tag) :]) in self.commented:
                return True
        return False

    def id_pairs(self) -> dict[str, str]:
        """Old -> new for every UUID and PARTUUID, lower case, as used in free text."""
        pairs = {k.lower(): v for k, v in self.uuids.items() if k and v}
        pairs.update({k.lower(): v for k, v in self.partuuids.items() if k and v})
        return {k: v for k, v in pairs.items() if k != v.lower()}


@dataclass(frozen=True)
class FstabRewrite:
    text: str
    changed: tuple[tuple[str, str], ...]  # (old spec, new spec) per rewritten entry
    disabled: tuple[str, ...]  # specs of entries commented out
    kept: tuple[str, ...]  # specs of entries left as they were (tmpfs, nfs, unknown ...)


_ENTRY = re.compile(r"^(?P<lead>\s*)(?P<spec>\S+)(?P<rest>.*)$", re.DOTALL)


def rewrite_fstab(
    text: str, ids: IdentityMap, *, disabled_note: str = "disk not cloned"
) -> FstabRewrite:
    """Rewrite the device field of every entry that names a cloned filesystem.

    Comments, blank lines, spacing, options and unknown entries are kept byte for byte.
    """
    out: list[str] = []
    changed: list[tuple[str, str]] = []
    disabled: list[str] = []
    kept: list[str] = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        stripped = body.strip()
        match = _ENTRY.match(body)
        if not stripped or stripped.startswith("#") or match is None:
            out.append(line)
            continue
        spec = match["spec"]
        if ids.is_commented(spec):
            out.append(f"# ka: {disabled_note}: {body}{ending}")
            disabled.append(spec)
            continue
        new = ids.translate(spec)
        if new is None or new == spec:
            out.append(line)
            kept.append(spec)
            continue
        out.append(f"{match['lead']}{new}{match['rest']}{ending}")
        changed.append((spec, new))
    return FstabRewrite("".join(out), tuple(changed), tuple(disabled), tuple(kept))


_HEXID = re.compile(r"[0-9A-Fa-f][0-9A-Fa-f-]{6,}[0-9A-Fa-f]")


def substitute_ids(text: str, pairs: Mapping[str, str]) -> tuple[str, int]:
    """Replace every whole-token occurrence of an old UUID/PARTUUID with its new value.

    One pass over the text, so a mapping a->b, b->c never turns a into c. Matching ignores
    case (GRUB writes lower case, some tools upper case); the replacement is written in
    the canonical spelling of the new value. Returns the new text and the number of replacements.
    """
    if not pairs:
        return text, 0
    table = {k.lower(): v for k, v in pairs.items()}
    count = 0

    def swap(m: re.Match[str]) -> str:
        nonlocal count
        token = m.group(0)
        new = table.get(token.lower())
        if new is None:
            return token
        count += 1
        return new

    # Anchor on token boundaries so a UUID inside a longer hex string is left alone.
    pattern = re.compile(r"(?<![0-9A-Za-z-])" + _HEXID.pattern + r"(?![0-9A-Za-z-])")
    return pattern.sub(swap, text), count


def fstab_entries(text: str) -> list[tuple[str, str, str]]:
    """(spec, mountpoint, fstype) of every entry; octal escapes in the mount point decoded."""
    return [(spec, mp, fstype) for spec, mp, fstype, _options in fstab_rows(text)]


def fstab_rows(text: str) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(spec, mountpoint, fstype, options) of every entry ("defaults" when none is given)."""
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#") or len(fields) < 3:
            continue
        options = tuple(fields[3].split(",")) if len(fields) > 3 else ("defaults",)
        rows.append((fields[0], _unescape(fields[1]), fields[2], options))
    return rows


def _unescape(value: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), value)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _get_ci(table: Mapping[str, str], key: str) -> str | None:
    if key in table:
        return table[key]
    lower = key.lower()
    for k, v in table.items():
        if k.lower() == lower:
            return v
    return None
