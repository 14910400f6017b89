"""What `ka clone` shows, fed by hostile nodes: names and reasons are text, never markup."""

from __future__ import annotations

import io
import sys

import pytest

from ka.clone.deploy import CloneResult, NodeOutcome
from ka.clone.view import LiveTable, summary
from ka.transport import Event

HOSTILE = ["[/]", "[bold red]x", "node\x1b[2J\r01"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("name", HOSTILE)
def test_live_table_on_a_terminal_takes_hostile_names(name: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    table = LiveTable({"t-fs-1": 10_000_000}, {"t-fs-1": ("extract /", "next stream")})
    assert table._live is not None  # the rich path, where markup would be read
    rows = [{"node": "10.0.0.1:4000", "name": name, "position": 1, "state": "active",
             "bytes": 4_000_000, "mb_per_s": 2.0}]
    table.event("t-fs-1", Event("progress", "produced 4.0 MB", data={"nodes": rows}))
    table.event("t-fs-1", Event("failed", f"{name}: [/] it failed"))
    table.say(f"ka: [pxe] {name} switched")
    table.close()
    shown = term.getvalue()
    assert "[/] it failed" in shown
    if "\x1b" in name:
        assert "\x1b[2J" not in shown and "node\\x1b[2J\\x0d01" in shown
    else:
        assert name in shown


def test_summary_escapes_what_nodes_reported() -> None:
    result = CloneResult(sessions=(), logs="/tmp/logs", nodes=(
        NodeOutcome("[/]\x1b[31m", 1, "failed", "bad\r\nnode02  ok  forged"),))
    text = summary(result)
    assert "\x1b" not in text and "\r" not in text
    assert "[/]\\x1b[31m" in text and "bad\\x0d\\x0anode02  ok  forged" in text
