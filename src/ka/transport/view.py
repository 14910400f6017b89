"""How `ka send` / `ka receive` show events: a live table on a terminal, plain lines otherwise,
or one JSON object per line. Part of the command line, so it prints."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ka.transport.options import Event, SessionReport

# A deployment larger than this shows its failures, then its slowest nodes, and a line of
# totals, in the live table, the progress lines and the summary (all of it is in --json).
SHOWN = 20
_FAILED = ("failed", "evicted")

# Node names, reasons and logs come from the nodes: never let them steer the terminal.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7f) if c not in (0x09,)}


def printable(value: object) -> str:
    """`value` as text with control characters (escape sequences, carriage returns...)
    shown as \\xNN, so what a node sends cannot move the cursor or restyle the terminal."""
    return str(value).translate(_CONTROL)


def plain(value: object) -> Any:
    """`value` as a rich Text, never read as markup: a node named "[/]" is just a name."""
    from rich.text import Text

    return Text(printable(value))


class EventView:
    def __init__(self, json_mode: bool, role: str) -> None:
        self.json_mode = json_mode
        self.role = role
        self.tty = sys.stderr.isatty() and not json_mode and role == "send"
        self._live: Any = None
        self._rows: list[dict[str, Any]] = []
        self._produced = 0

    def __enter__(self) -> EventView:
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._table(), console=Console(stderr=True), refresh_per_second=4,
                              transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.__exit__(t, e, tb)
            self._live = None

    def event(self, ev: Event) -> None:
        if self.json_mode:
            print(json.dumps(ev.to_json()), flush=True)
            return
        if ev.kind == "progress":
            self._rows = list(ev.data.get("nodes", []))
            self._produced = int(ev.data.get("produced", 0))
            if self._live is not None:
                self._live.update(self._table())
            else:
                shown, totals = overview(self._rows, key=_live_order)
                parts = [f"{r['name'] or r['node']} {r['bytes'] / 1e6:.0f}MB {r['state']}"
                         for r in shown]
                print(printable(f"ka: {ev.message}; " + ", ".join(parts)
                                + (f"; {totals}" if totals else "")),
                      file=sys.stderr, flush=True)
            return
        if self._live is not None:
            self._live.console.print(plain(f"ka: {ev.message}"))
        else:
            print(printable(f"ka: {ev.message}"), file=sys.stderr, flush=True)

    def _table(self) -> Any:
        from rich.table import Table

        shown, totals = overview(self._rows, key=_live_order)
        table = Table(title=f"ka send: {self._produced / 1e6:.1f} MB produced",
                      caption=plain(totals) if totals else None)
        for col in ("#", "node", "state", "MB", "MB/s"):
            table.add_column(col, justify="right" if col in ("#", "MB", "MB/s") else "left")
        for r in shown:
            table.add_row(plain(r["position"]), plain(r["name"] or r["node"]),
                          plain(r["state"]), f"{r['bytes'] / 1e6:.1f}",
                          f"{r['mb_per_s']:.1f}")
        return table

    def summary(self, report: SessionReport) -> None:
        if self.json_mode:
            print(json.dumps({"event": "summary", **report.to_json()}), flush=True)
            return
        out = sys.stdout
        print(f"{'#':>3} {'node':<24} {'state':<8} {'MB':>10} {'MB/s':>8} {'digest':<6} "
              f"{'exit':>4}  reason", file=out)
        names = [n.name for n in report.nodes]
        shown, totals = overview(
            [{"state": n.state, "mb_per_s": n.mb_per_s, "position": n.position, "report": n}
             for n in report.nodes], key=_summary_order)
        for n in (r["report"] for r in shown):
            label = printable(n.name if n.name and names.count(n.name) == 1 else n.node)
            status = "-" if n.consumer_status is None else str(n.consumer_status)
            print(f"{n.position:>3} {label[:24]:<24} {n.state:<8} "
                  f"{n.bytes / 1e6:>10.1f} {n.mb_per_s:>8.1f} {'ok' if n.digest_ok else 'BAD':<6} "
                  f"{status:>4}  {printable(n.reason or '')}", file=out)
        if totals:
            print(totals, file=out)
        for n in report.nodes:  # every one, also at 1,000 nodes: there are few
            if n.moved:
                print(printable(f"{n.name or n.node} moved to the tail: {n.moved}"), file=out)
        rate = report.bytes / report.seconds / 1e6 if report.seconds > 0 else 0.0
        print(f"Total data sent = {report.bytes / 2**20:.1f} MiB, digest {report.digest[:16]}…",
              file=out)
        print(f"Transfer time = {report.seconds:.3f} seconds, throughput = {rate:.1f} MB/s",
              file=out)
        print(f"The pipeline was emptied in {report.drain_seconds:.3f} seconds", file=out)
        failed = [n for n in report.nodes if n.state != "ok"]
        if failed:
            print(f"ka: {len(failed)} of {len(report.nodes)} node(s) failed", file=sys.stderr)


def overview(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any]
             ) -> tuple[list[dict[str, Any]], str]:
    """The rows to show and a line of totals ("" when every row is shown). A small session
    shows every row in chain order; a large one its failures, then the slowest of the rest
    (`key` orders them), SHOWN rows in all, and counts by state."""
    if len(rows) <= SHOWN:
        return rows, ""
    shown = sorted(rows, key=key)[:SHOWN]
    counts = Counter(str(r["state"]) for r in rows)
    rates = sorted(float(r["mb_per_s"]) for r in rows if r["state"] not in _FAILED)
    line = f"{len(rows):,} nodes: " + ", ".join(
        f"{counts[state]:,} {state}" for state in sorted(counts, key=_state_rank))
    if rates:
        line += (f"; MB/s slowest {rates[0]:.1f}, median {rates[len(rates) // 2]:.1f}, "
                 f"fastest {rates[-1]:.1f}")
    return shown, line + f"; {SHOWN} shown: failures first, then the slowest"


def _state_rank(state: str) -> tuple[int, str]:
    return (0 if state in _FAILED else 1, state)


def _live_order(r: dict[str, Any]) -> tuple[Any, ...]:
    # failures in chain order, then nodes still receiving (slowest first), then the rest
    failed = r["state"] in _FAILED
    return (not failed, r["state"] != "active", 0.0 if failed else float(r["mb_per_s"]),
            r["position"])


def _summary_order(r: dict[str, Any]) -> tuple[Any, ...]:
    failed = r["state"] in _FAILED  # failures in chain order, then the slowest first
    return (not failed, 0.0 if failed else float(r["mb_per_s"]), r["position"])
