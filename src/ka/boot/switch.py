"""`ka pxe set`: switch nodes between "boot ka" and "boot the local disk".

A node with its own menu files (per MAC, for every configured loader) boots what they say; the
others boot the default menu. `all` sets the default and removes every per-node menu, so that
all nodes follow it. `ka clone --pxe` calls `set_boot(..., "local")` for the nodes that
succeeded.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

from ka.boot.menus import ENTRIES, Entry, mac_key
from ka.boot.nodes import resolve_node
from ka.boot.pxe import PxeConfig, menu_files
from ka.boot.state import save_state, write_text
from ka.errors import UsageError

# Per-node menu file names, per loader directory (see `menu_files`).
_PER_NODE = (
    ("pxelinux.cfg", re.compile(r"^01-((?:[0-9a-f]{2}-){5}[0-9a-f]{2})$")),
    ("grub", re.compile(r"^grub\.cfg-01-((?:[0-9a-f]{2}-){5}[0-9a-f]{2})$")),
    ("ipxe", re.compile(r"^01-((?:[0-9a-f]{2}-){5}[0-9a-f]{2})\.ipxe$")),
)


def check_entry(entry: str) -> Entry:
    if entry not in ENTRIES:
        raise UsageError(f"boot entry {entry!r} is neither 'ka' nor 'local'")
    return entry  # type: ignore[return-value]


def set_boot(config: PxeConfig, nodes: Sequence[str], entry: Entry) -> PxeConfig:
    """Switch `nodes` (MACs, IPs or names from the table; or ["all"]) to `entry`.

    Every node is resolved before anything is written, so a typo changes nothing.
    Returns the configuration as saved (its default changes only with "all").
    """
    check_entry(entry)
    if not nodes:
        raise UsageError("no node given", hint="give MACs, IPs or names, or 'all'")
    if "all" in nodes:
        if len(nodes) != 1:
            raise UsageError("'all' cannot be combined with node names")
        for path, _ in _per_node_files(config.tftp_root):
            os.unlink(path)
        config = dataclasses.replace(config, default=entry)
        for f in menu_files(config, entry, None):
            write_text(os.path.join(config.tftp_root, f.target), f.text)
        save_state(config)
        return config
    macs = [resolve_node(n, config.nodes) for n in nodes]
    for mac in macs:
        for f in menu_files(config, entry, mac_key(mac)):
            write_text(os.path.join(config.tftp_root, f.target), f.text)
    return config


def carry_over(old: PxeConfig, new: PxeConfig) -> dict[str, Entry]:
    """Re-render every per-node menu of `old` for `new` (`ka pxe config` run again), keeping
    what each node boots; returns that, by MAC."""
    states = boot_states(old)
    for path, _ in _per_node_files(old.tftp_root):
        os.unlink(path)
    for mac, entry in states.items():
        for f in menu_files(new, entry, mac_key(mac)):
            write_text(os.path.join(new.tftp_root, f.target), f.text)
    return states


def _per_node_files(root: str) -> list[tuple[str, str]]:
    """(path, MAC key) of every per-node menu file under the TFTP root."""
    found = []
    for directory, pattern in _PER_NODE:
        path = os.path.join(root, directory)
        if os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                if m := pattern.match(name):
                    found.append((os.path.join(path, name), m.group(1)))
    return found


def boot_states(config: PxeConfig) -> dict[str, Entry]:
    """What each node with its own menus boots, by MAC (nodes not listed boot the default).

    A node's entry is read back by comparing its menu files with the two possible menus;
    anything else (edited by hand, half-configured) is reported as an error.
    """
    states: dict[str, Entry] = {}
    for key in sorted({key for _, key in _per_node_files(config.tftp_root)}):
        found: set[Entry] = set()
        for entry in ENTRIES:
            expected = menu_files(config, entry, key)
            if all(_read(os.path.join(config.tftp_root, f.target)) == f.text for f in expected):
                found.add(entry)
        if len(found) != 1:
            raise UsageError(f"the menus of node {key.replace('-', ':')} are incomplete or were "
                             "changed by hand",
                             hint=f"reset them with: ka pxe set {key.replace('-', ':')} ka|local")
        states[key.replace("-", ":")] = found.pop()
    return states


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None
