"""Partition roles and their type codes in GPT and MBR, and what each filesystem accepts."""

from __future__ import annotations

import re

# Role -> GPT type GUID (as sfdisk prints them: upper case).
GPT_ROLES: dict[str, str] = {
    "linux": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    "swap": "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
    "esp": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    "bios": "21686148-6449-6E6F-744E-656564454649",
    "lvm": "E6D6D379-F507-44C2-A23C-238F2A3DF928",
    "raid": "A19D880F-05FC-4D3B-A006-743F0F84911E",
}
# Role -> MBR type byte (hex, as sfdisk prints them).
MBR_ROLES: dict[str, str] = {
    "linux": "83",
    "swap": "82",
    "esp": "ef",
    "lvm": "8e",
    "raid": "fd",
    "extended": "5",
}
ROLES = ("linux", "swap", "esp", "bios", "lvm", "raid", "extended")
# MBR bytes that mean "extended"; only the `extended` role may create one.
EXTENDED_BYTES = {0x05, 0x0F, 0x85}

FILESYSTEMS = ("ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "swap", "jfs", "reiserfs")
# Longest filesystem label each mkfs accepts, in bytes.
LABEL_LIMITS: dict[str, int] = {
    "ext2": 16,
    "ext3": 16,
    "ext4": 16,
    "xfs": 12,
    "btrfs": 255,
    "vfat": 11,
    "swap": 16,
    "jfs": 16,
    "reiserfs": 16,
}

GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_TYPE_RE = re.compile(r"^type(?:0x)?([0-9a-fA-F]{1,2})$", re.IGNORECASE)
_BY_BYTE = {int(code, 16): role for role, code in MBR_ROLES.items() if role != "extended"}
_BY_GUID = {guid: role for role, guid in GPT_ROLES.items()}


def canonical_type(token: str) -> str | None:
    """The canonical desc token for a type as written (`type83` -> `linux`), or None.

    `typeXX` bytes that mean extended return None: only `extended` makes an extended partition.
    """
    low = token.lower()
    if low in ROLES:
        return low
    m = _TYPE_RE.match(token)
    if m:
        byte = int(m.group(1), 16)
        if byte == 0 or byte in EXTENDED_BYTES:
            return None
        return _BY_BYTE.get(byte, f"type{byte:x}")
    if GUID_RE.match(token):
        return _BY_GUID.get(token.upper(), token.upper())
    return None


def type_code(canonical: str, label: str) -> str:
    """The sfdisk `type=` value of a canonical type token on a label."""
    if label == "gpt":
        return GPT_ROLES.get(canonical, canonical)
    if canonical in MBR_ROLES:
        return MBR_ROLES[canonical]
    return canonical.removeprefix("type")


def type_from_code(code: str, label: str) -> str:
    """The canonical desc token for a type code read back from sfdisk --json."""
    if label == "gpt":
        return _BY_GUID.get(code.upper(), code.upper())
    byte = int(code, 16)
    if byte in EXTENDED_BYTES:
        return "extended"
    return _BY_BYTE.get(byte, f"type{byte:x}")
