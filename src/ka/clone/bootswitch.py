"""`ka clone --pxe`: once the reports are in, installed nodes boot their disk, failed ones ka.

`ka pxe` knows a node by the MAC address it network-boots from: per-MAC menu files in the TFTP
tree decide what it boots (`ka.boot.switch`). Each node reports the MAC and IP address of the
interface by which it reached the golden node (in the boot environment, the one that got the
DHCP lease), and the golden node saw the address it joined from. A node is matched, first
match wins:

1. in the node table of the state directory (`MAC [IP] [NAME]` lines), by the MAC it
   reported, by the IP address it reported, by the address it joined from, by its name;
2. else by the MAC it reported, as is.

The table comes first so that an operator's table settles a node with several interfaces. An
installed node that cannot be switched (it matches nothing, or its MAC is also a failed
node's) is a failure of the run that says what to run: it still boots ka, and its next boot
would install it again.
This runs while every node still waits to be released (`BeforeRelease` of `run_clone`), so no
node reboots before its menu says "local".
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ka.boot.menus import Entry
from ka.boot.nodes import NodeEntry, normalize_mac
from ka.boot.pxe import PxeConfig
from ka.boot.state import load_state
from ka.boot.switch import boot_states, set_boot
from ka.clone.deploy import NodeOutcome
from ka.errors import KaError, UsageError


@dataclass(frozen=True)
class NodeMatch:
    node: str  # the node's name in the clone report
    mac: str  # what `ka pxe set` is given
    how: str  # in words, e.g. "node table, by its IP 10.0.0.11"


@dataclass(frozen=True)
class Unswitched:
    """An installed node left on ka: its next network boot would install it again."""

    node: str
    why: str
    command: str  # what switches it by hand

    def __str__(self) -> str:
        return (f"{self.node} installed but still boots ka (its next boot would install it "
                f"again): {self.why}; switch it with: {self.command}")


@dataclass(frozen=True)
class BootSwitch:
    """What `ka clone --pxe` does (planned) or did (applied) in a `ka pxe` state directory."""

    state_dir: str
    local: tuple[NodeMatch, ...] = ()  # installed nodes switched to local boot
    ka: tuple[NodeMatch, ...] = ()  # failed nodes that would have booted local, set back
    stay: tuple[str, ...] = ()  # failed nodes that boot ka already
    warnings: tuple[str, ...] = ()  # nodes left as they were, and what to do about them
    unswitched: tuple[Unswitched, ...] = ()  # installed nodes still on ka: the run failed

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(str(u) for u in self.unswitched)

    def to_json(self) -> dict[str, Any]:
        return {
            "pxe_state_dir": self.state_dir,
            "switched_to_local": [vars(m) for m in self.local],
            "set_back_to_ka": [vars(m) for m in self.ka],
            "failed_on_ka": list(self.stay),
            "installed_not_switched": [vars(u) for u in self.unswitched],
            "warnings": list(self.warnings),
        }


def match_node(outcome: NodeOutcome, table: Sequence[NodeEntry]) -> NodeMatch | None:
    """How `ka pxe` knows this node, or None (see the module's docstring for the order)."""
    r = outcome.report
    mac = normalize_mac(r.mac) if r and r.mac else None
    lookups: list[tuple[str, str | None, str]] = [
        ("its MAC", mac, "mac"),
        ("its IP", r.ip if r else None, "ip"),
        ("the address it joined from", outcome.address, "ip"),
        ("its name", outcome.name, "name"),
    ]
    for words, value, column in lookups:
        for entry in table:
            if value and getattr(entry, column) == value:
                shown = "" if column == "mac" else f" {value}"
                return NodeMatch(outcome.name, entry.mac, f"node table, by {words}{shown}")
    if mac:
        iface = f" ({r.interface})" if r and r.interface else ""
        return NodeMatch(outcome.name, mac, f"the MAC it reported{iface}")
    return None


def plan_switch(
    state_dir: str,
    outcomes: Sequence[NodeOutcome],
    table: Sequence[NodeEntry],
    default: Entry,
    states: Mapping[str, Entry] | None,
) -> BootSwitch:
    """Which MACs go to "local" and which back to "ka" (pure: no file is read or written).

    `default` and `states` (per-MAC entries) are what the nodes boot now; `states` is None
    when the menus could not be read back, and then every failed node that matches is set
    back to ka, whatever it boots now. A MAC that both an installed and a failed node match
    is left alone: switching it could boot a broken disk.
    """
    installed = [o for o in outcomes if o.result == "ok"]
    failed = [o for o in outcomes if o.result != "ok"]
    warnings: list[str] = []
    unswitched: list[Unswitched] = []
    failed_matches = {o.name: match_node(o, table) for o in failed}
    failed_macs = {m.mac: m.node for m in failed_matches.values() if m}
    local: list[NodeMatch] = []
    for o in installed:
        m = match_node(o, table)
        if m is None:
            seen = ", ".join(dict.fromkeys(
                x for x in (o.report.ip if o.report else None, o.address) if x))
            unswitched.append(Unswitched(
                o.name,
                f"it reported no MAC address and neither its name nor its address "
                f"({seen or 'unknown'}) is in the node table of {state_dir}",
                f"ka pxe set MAC local --dir {state_dir} (MAC: the one it network-boots "
                f"from), or add 'MAC IP NAME' to the node table"))
        elif m.mac in failed_macs:
            unswitched.append(Unswitched(
                o.name,
                f"its MAC {m.mac} ({m.how}) is also that of {failed_macs[m.mac]}, which "
                f"failed",
                f"ka pxe set {m.mac} local --dir {state_dir}, once the node table of "
                f"{state_dir} is checked"))
        elif any(x.mac == m.mac for x in local):
            other = next(x.node for x in local if x.mac == m.mac)
            warnings.append(f"{o.name} and {other} both match MAC {m.mac}: switched once; "
                            f"check the node table of {state_dir}")
        else:
            local.append(m)
    back: list[NodeMatch] = []
    stay: list[str] = []
    anything_local = states is None or default == "local" or "local" in states.values()
    for o in failed:
        m = failed_matches[o.name]
        if m is None:
            if anything_local:
                warnings.append(
                    f"{o.name} failed and matches no node of {state_dir}: if it boots its "
                    f"disk, set it back with: ka pxe set MAC ka --dir {state_dir}")
            else:
                stay.append(o.name)
        elif states is not None and states.get(m.mac, default) == "ka":
            stay.append(o.name)
        else:
            back.append(m)
    return BootSwitch(state_dir, tuple(local), tuple(back), tuple(stay), tuple(warnings),
                      tuple(unswitched))


def check_state(state_dir: str) -> PxeConfig:
    """The `ka pxe` configuration, refused up front when it cannot be switched later."""
    config = load_state(state_dir)
    if not os.path.isdir(config.tftp_root):
        raise UsageError(f"--pxe {state_dir}: its TFTP root {config.tftp_root} does not exist",
                         hint=f"re-create it with: ka pxe config ... --dir {state_dir}")
    if not os.access(config.tftp_root, os.W_OK | os.X_OK):
        raise UsageError(f"--pxe {state_dir}: cannot write the menus in {config.tftp_root}",
                         hint="run ka clone as the user that runs ka pxe (root)")
    return config


def switch_boot(state_dir: str, outcomes: Sequence[NodeOutcome]) -> BootSwitch:
    """Switch installed nodes to local boot and failed ones that would boot local back to ka."""
    config = check_state(state_dir)
    states: dict[str, Entry] | None
    unread: UsageError | None = None
    try:
        states = boot_states(config)
    except UsageError as e:
        # A menu edited by hand: what a failed node boots is unknown, so each one goes back
        # to ka (set_boot rewrites what it switches anyway).
        states, unread = None, e
    planned = plan_switch(state_dir, outcomes, config.nodes, config.default, states)
    if unread is not None:
        planned = dataclasses.replace(planned, warnings=(
            f"the boot menus in {state_dir} could not be read back ({unread.message}): every "
            f"failed node was set back to ka without checking what it booted; "
            f"{unread.hint or 'check the menus'}",
            *planned.warnings))
    try:
        if planned.local:
            set_boot(config, [m.mac for m in planned.local], "local")
        if planned.ka:
            set_boot(config, [m.mac for m in planned.ka], "ka")
    except OSError as e:
        raise KaError(f"--pxe {state_dir}: could not write a boot menu: {e}",
                      hint=f"switch the installed nodes by hand: ka pxe set NODE... local "
                           f"--dir {state_dir}") from e
    return planned


def describe(config: PxeConfig, report_session: str) -> str:
    """What --pxe will do, for --dry-run."""
    try:
        states = boot_states(config)
    except UsageError as e:
        states, note = {}, f"; {e.message}"
    else:
        note = ""
    local = sum(1 for v in states.values() if v == "local")
    return (
        f"after {report_session} (every node hands its report over), before any node is "
        f"released: each node that installed is switched to local boot in {config.state_dir} "
        f"(TFTP root {config.tftp_root}; now: default {config.default}, {len(states)} node(s) "
        f"with their own menus, {local} of them local{note}); a failed node stays on ka (set "
        f"back to ka if it would boot local). A node is matched in the node table "
        f"({len(config.nodes)} entries) by the MAC or IP address it reports, the address it "
        f"joins from or its name, else by the MAC it reports; an installed node that cannot "
        f"be switched fails the run."
    )
