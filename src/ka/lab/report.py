"""What a lab clone did on every node, and the summary table `ka lab clone` prints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ka.lab.checks import Check
from ka.lab.verdict import NodeVerdict

MiB = 1024 * 1024


def install_report(log: str) -> dict[str, Any] | None:
    """The node's install report, when `ka install` printed one as a JSON object line."""
    for line in reversed(log.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict) and ("steps" in value or "bytes" in value):
                return value
    return None


def reason_of(log: str) -> str:
    """The error line `ka` printed last (`ka: error: ...`), or the log's last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower():
            return line
    return lines[-1] if lines else "no output"


@dataclass(frozen=True)
class NodeOutcome:
    node: str
    status: int | None          # exit status of `ka install` (None: never ended)
    killed: bool                # killed on purpose (a test of the chain's healing)
    seconds: float
    report: dict[str, Any] | None
    log_tail: str
    verdict: NodeVerdict | None
    # Bytes of the node's sparse disk image that were ever written (0: its disk untouched).
    disk_written: int = 0

    @property
    def result(self) -> str:
        if self.killed:
            return "killed"
        if self.status is None:
            return "timeout"
        return "ok" if self.status == 0 else f"failed ({self.status})"

    @property
    def install_report(self) -> dict[str, Any] | None:
        """The report the node kept in its clone, else the one it printed."""
        if self.verdict is not None and self.verdict.report is not None:
            return self.verdict.report
        return self.report

    @property
    def steps(self) -> list[dict[str, Any]]:
        report = self.install_report or {}
        steps = report.get("steps", [])
        return [s for s in steps if isinstance(s, dict)]

    @property
    def bytes(self) -> int:
        moved = sum(int(s.get("bytes") or 0) for s in self.steps)
        if moved:
            return moved
        value = (self.install_report or {}).get("bytes")
        return value if isinstance(value, int) else 0

    @property
    def reason(self) -> str:
        return "" if self.status == 0 else reason_of(self.log_tail)

    @property
    def verified(self) -> bool:
        return self.verdict is not None and self.verdict.ok


@dataclass(frozen=True)
class LabCloneReport:
    nodes: tuple[NodeOutcome, ...]
    golden_status: int | None
    golden_log_tail: str
    identities: Check
    seconds: float
    clone_seconds: float
    data_bytes: int
    files: int
    rate: str | None
    workdir: str | None
    clone_argv: tuple[str, ...]
    capture: tuple[float, int, int] | None = None  # --image: seconds, stored and raw bytes
    served: dict[str, Any] | None = None  # --serve: the golden's serve.json

    @property
    def ok(self) -> bool:
        return (self.golden_status == 0 and all(n.verified for n in self.nodes)
                and self.identities.ok)

    def node(self, name: str) -> NodeOutcome:
        return next(n for n in self.nodes if n.node == name)


def summary_table(report: LabCloneReport) -> str:
    head = f"{'node':<8} {'result':<12} {'bytes':>12} {'time s':>8} {'MB/s':>8}  verify"
    lines = [head, "-" * len(head)]
    for n in report.nodes:
        mbs = n.bytes / n.seconds / 1e6 if n.bytes and n.seconds else 0.0
        verify = "-" if n.verdict is None else ("OK" if n.verdict.ok else "FAILED")
        lines.append(f"{n.node:<8} {n.result:<12} {n.bytes:>12} {n.seconds:>8.1f} {mbs:>8.1f}"
                     f"  {verify}")
    lines.append("")
    lines.append(f"golden tree: {report.files} files, {report.data_bytes / MiB:.0f} MiB; "
                 f"links {report.rate or 'unshaped'}; clone {report.clone_seconds:.1f} s, "
                 f"whole run {report.seconds:.1f} s; ka clone exit status {report.golden_status}")
    if report.capture is not None:
        seconds, stored, raw = report.capture
        lines.append(f"deployed from an image: captured in {seconds:.1f} s, {raw / MiB:.0f} MiB "
                     f"of streams stored in {stored / MiB:.0f} MiB ({stored / max(raw, 1):.0%})")
    if report.served is not None:
        waves = ", ".join(f"{r['node']} {r['result']} in wave {r['wave']}"
                          for r in report.served.get("nodes", []))
        lines.append(f"served in waves (ka clone --serve): {waves}")
    lines.append(report.identities.describe())
    for n in report.nodes:
        if n.verdict is not None and not n.verdict.ok:
            lines.append(n.verdict.describe())
        if n.status != 0:
            lines.append(f"{n.node}: {n.reason}")
    if report.golden_status != 0:
        lines.append("golden node (ka clone) output, last lines:")
        lines += ["  " + line for line in report.golden_log_tail.splitlines()]
    if report.workdir:
        lines.append(f"work directory kept: {report.workdir}")
    lines.append("RESULT: " + ("every clone verified" if report.ok else "FAILED"))
    return "\n".join(lines)
