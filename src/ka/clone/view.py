"""How `ka clone` shows its work: the plan for --dry-run, a live per-node table, a summary.

Part of the command line, so it prints.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from typing import Any

from ka.clone import tarstream
from ka.clone.bootswitch import BootSwitch
from ka.clone.deploy import CloneResult, SessionSettings, node_json, source_for
from ka.clone.nodedisks import smallest_disk
from ka.clone.plan import ClonePlan, Stream
from ka.transport import CompressedSource
from ka.transport.view import plain, printable


def describe_plan(plan: ClonePlan, settings: SessionSettings,
                  sources: Callable[[Stream], Any] | None = None) -> str:
    last = plan.session_port(plan.sessions[-1], settings.port)
    lines = [f"clone plan (version {plan.version}) for {plan.nodes} node(s), "
             f"sessions {', '.join(plan.sessions)} on ports {settings.port}-{last} in turn"]
    for disk in plan.disks:
        size = f"{disk.size >> 20} MiB" if disk.size else "no device (desc only)"
        need = smallest_disk(disk, plan)
        needs = (f"node disks of at least {need >> 20} MiB" if need is not None
                 else "fits no node disk")
        lines.append(f"\ngolden disk {disk.name} ({disk.device or '-'}, {size}; {needs}):")
        lines += ["  " + x for x in disk.desc.splitlines()]
        if disk.boot_code:
            lines.append("  MBR boot code: 440 bytes written after the bootloader step")
    lines.append("\npartitions:")
    for p in plan.partitions:
        lines.append(f"  {p.disk}:{p.number} {p.fstype or '-'} {p.mountpoint or '-'} "
                     f"label={p.label or '-'} uuid={p.uuid or '-'} content={p.content} "
                     f"used={p.used >> 20} MiB")
    lines.append("\nstreams:")
    for s in plan.streams:
        src = sources(s) if sources else source_for(plan, s, settings.root)
        what = shlex.join(src.argv) if hasattr(src, "argv") else f"read {src.path}"
        if isinstance(src, CompressedSource):
            what = f"send the compressed frames of the {src.description} as stored"
        lines.append(f"  {s.session}: {s.kind} -> {s.disk}:{s.number} {s.mountpoint or ''}")
        lines.append(f"    golden: {what}")
        if s.kind == "tar":
            dest = "TARGET" + (s.mountpoint or "")
            argv = tarstream.extract_argv(dest, selinux=plan.selinux)
            lines.append(f"    node:   {shlex.join(argv)}")
    if plan.excluded_dirs:
        lines.append("\nexcluded directories (re-created empty):")
        lines += [f"  {d.path} mode {d.mode:04o} owner {d.uid}:{d.gid}" for d in plan.excluded_dirs]
    if plan.excluded_disks:
        lines.append(f"\nexcluded disks: {', '.join(plan.excluded_disks)} "
                     f"(fstab entries commented out: {len(plan.excluded_refs)} references)")
    lines.append("\nfstab of the golden tree (rewritten on each node to its new UUIDs):")
    lines += ["  " + x for x in plan.fstab.splitlines()] or ["  (empty)"]
    names = (f"pattern {plan.hostnames.pattern}" if plan.hostnames and plan.hostnames.pattern
             else f"table of {len(plan.hostnames.table)} entries" if plan.hostnames
             else "unchanged (golden's name)")
    lines.append(f"\nhost names: {names}; bootloader: {plan.bootloader.kind} "
                 f"{' '.join(plan.bootloader.options)}".rstrip())
    lines.append("\neach node will: receive the plan; map golden disks to local disks; "
                 "partition, format (new UUIDs) and mount under its target; extract every "
                 "stream; re-create excluded directories; rewrite fstab and the UUIDs in "
                 "grub/crypttab/resume files; new machine-id and SSH host keys; set its host "
                 "name; remove net rules and DHCP leases; regenerate the initramfs and install "
                 "GRUB when the clone has them; write /var/log/ka-install.json; unmount; hand "
                 "its report over in " + (plan.report_session or plan.done_session)
                 + (f" and wait for its release in {plan.done_session}"
                    if plan.report_session else "") + ".")
    for note in plan.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


class LiveTable:
    """Per-node progress of the current session: a live table on a terminal, lines otherwise."""

    PLAIN_EVERY = 5.0  # seconds between progress lines when not on a terminal

    def __init__(self, expected: dict[str, int] | None = None,
                 steps: dict[str, tuple[str, str]] | None = None) -> None:
        # Bytes each session should carry (tar: the golden filesystem's used bytes, which
        # tar's output roughly matches; raw: the partition size), for the ETA column.
        self.expected = expected or {}
        self.steps = steps or {}  # what a node does during / after each session
        self.rows: dict[str, dict[str, Any]] = {}
        self.session = ""
        self._live: Any = None
        self._last = 0.0
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._render(), console=Console(stderr=True),
                              refresh_per_second=4, transient=False)
            self._live.start()

    def event(self, session: str, ev: Any) -> None:
        if session != self.session:
            self.session = session
        if ev.kind == "progress":
            for r in ev.data.get("nodes", []):
                name = str(r.get("name") or r.get("node"))
                self.rows[name] = {**r, "session": session,
                                   "step": node_step(self.steps, session, r.get("state")),
                                   "eta": eta(self.expected.get(session, 0), r)}
            if self._live is not None:
                self._live.update(self._render())
            elif time.monotonic() - self._last >= self.PLAIN_EVERY:
                self._last = time.monotonic()
                parts = [f"{n} {r['step']} {r['bytes'] / 1e6:.0f}MB {r['mb_per_s']:.1f}MB/s "
                         f"{r['state']}"
                         + (f" ETA {r['eta']}" if r["eta"] else "")
                         for n, r in sorted(self.rows.items()) if r["session"] == session]
                print(printable(f"ka: [{session}] {ev.message}; " + ", ".join(parts)),
                      file=sys.stderr, flush=True)
            return
        self.say(f"ka: [{session}] {ev.message}")

    def say(self, line: str) -> None:
        if self._live is not None:
            self._live.console.print(plain(line))
        else:
            print(printable(line), file=sys.stderr, flush=True)

    def _render(self) -> Any:
        from rich.table import Table

        t = Table(title=plain(f"ka clone: session {self.session}"))
        for col in ("node", "step", "session", "state", "MB", "MB/s", "ETA"):
            t.add_column(col, justify="right" if col in ("MB", "MB/s", "ETA") else "left")
        for name, r in sorted(self.rows.items()):
            t.add_row(plain(name), plain(r["step"]), plain(r["session"]),
                      plain(r.get("state", "")), f"{r.get('bytes', 0) / 1e6:.1f}",
                      f"{r.get('mb_per_s', 0.0):.1f}", plain(r.get("eta") or ""))
        return t

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None


def session_steps(plan: ClonePlan) -> dict[str, tuple[str, str]]:
    """What a node does during each session, and after it until it joins the next one.

    The golden node sees the sessions only: between two of them a node partitions, or
    fixes its clone up, and this is what the live table shows then.
    """
    out = {plan.plan_session: ("receive plan", "partition and format")}
    for i, s in enumerate(plan.streams):
        during = f"extract {s.mountpoint}" if s.kind == "tar" else f"raw copy {s.disk}:{s.number}"
        out[s.session] = (during, "fix-ups" if i == len(plan.streams) - 1 else "next stream")
    if plan.report_session:
        out[plan.report_session] = ("hand report over", "wait for the release")
    out[plan.done_session] = ("release barrier" if plan.report_session
                              else "hand report over", "released")
    return out


def node_step(steps: dict[str, tuple[str, str]], session: str, state: object) -> str:
    during, after = steps.get(session, (session, session))
    if state in ("evicted", "failed"):
        return f"{during}: {state}"
    return after if state == "done" else during


def expected_bytes(plan: ClonePlan) -> dict[str, int]:
    out = {}
    for s in plan.streams:
        if s.kind == "raw":
            out[s.session] = s.size
        else:
            out[s.session] = sum(p.used for p in plan.partitions
                                 if (p.disk, p.number) == (s.disk, s.number))
    return out


def eta(expected: int, row: dict[str, Any]) -> str:
    """Time left for one node at its current rate, as m:ss; "" when unknown or done."""
    rate = float(row.get("mb_per_s") or 0.0) * 1e6
    left = expected - int(row.get("bytes") or 0)
    if not expected or rate <= 0 or left <= 0 or row.get("state") != "active":
        return ""
    seconds = int(left / rate)
    return f"{seconds // 60}:{seconds % 60:02d}"


def summary(result: CloneResult) -> str:
    lines = ["", "session                 nodes  bytes        seconds  MB/s"]
    for name, rep in result.sessions:
        rate = rep.bytes / rep.seconds / 1e6 if rep.seconds else 0.0
        lines.append(f"{name:<22}  {len(rep.nodes):>5}  {rep.bytes:>11}  {rep.seconds:>7.1f}"
                     f"  {rate:>6.1f}")
    lines += ["", "node          result  seconds  reason"]
    for o in result.nodes:
        secs = f"{o.report.seconds:.1f}" if o.report else "-"
        lines.append(f"{printable(o.name):<12}  {o.result:<6}  {secs:>7}  "
                     f"{printable(o.reason or '')}")
    for w in result.warnings:
        lines.append(f"golden node warning: {w}")
    for e in result.errors:
        lines.append(f"golden node error: {e}")
    ok = sum(1 for o in result.nodes if o.result == "ok")
    lines.append(f"\n{ok}/{len(result.nodes)} node(s) cloned; node reports in {result.logs}/ "
                 "(summary.json and one file per node)")
    return "\n".join(lines)


def describe_switch(done: BootSwitch) -> list[str]:
    """The --pxe part of the summary: what each node boots next, and what was left alone."""
    lines = [f"\nnetwork boot in {done.state_dir} (ka pxe):"]
    # Names, MACs and what matched come from the nodes' reports: shown as text only.
    lines += [printable(f"  {m.node}: local (MAC {m.mac}, matched by {m.how})")
              for m in done.local]
    lines += [printable(f"  {m.node}: failed, set back to ka (MAC {m.mac}, matched by {m.how})")
              for m in done.ka]
    lines += [printable(f"  {name}: failed, stays on ka") for name in done.stay]
    lines += [printable(f"  {u.node}: installed, NOT switched, still boots ka ({u.why}); "
                        f"run: {u.command}") for u in done.unswitched]
    lines += [printable(f"  warning: {w}") for w in done.warnings]
    if len(lines) == 1:
        lines.append("  nothing to switch")
    return lines


def result_json(result: CloneResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "logs": result.logs,
        "errors": list(result.errors),
        "warnings": list(result.warnings),
        "sessions": {name: rep.to_json() for name, rep in result.sessions},
        "nodes": [node_json(o) for o in result.nodes],
        **({"before_release": dict(result.before_release)} if result.before_release else {}),
    }
