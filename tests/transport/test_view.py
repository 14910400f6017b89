"""What `ka send` shows: plain lines when not on a terminal, JSON lines, the final summary."""

from __future__ import annotations

import io
import json
import sys

import pytest

from ka.transport.options import Event, NodeReport, SessionReport
from ka.transport.view import EventView, printable

REPORT = SessionReport(
    nodes=(
        NodeReport("10.0.0.2:4000", "alpha", 1, "ok", 50_000_000, 4.0, True, 0, None),
        NodeReport("10.0.0.3:4000", "beta", 2, "failed", 50_000_000, 5.0, True, 3,
                   "consumer command exited with status 3"),
        NodeReport("10.0.0.4:4000", "gamma", 3, "evicted", 1_000_000, 0.0, False, None,
                   "no heartbeat for 2.3 s"),
    ),
    bytes=50_000_000, seconds=4.0, drain_seconds=0.25, digest="ab" * 32,
)


def test_summary_has_a_row_per_node_and_the_original_statistics(
        capsys: pytest.CaptureFixture[str]) -> None:
    EventView(json_mode=False, role="send").summary(REPORT)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["#", "node", "state", "MB", "MB/s", "digest", "exit", "reason"]
    assert lines[1].split() == ["1", "alpha", "ok", "50.0", "12.5", "ok", "0"]
    assert lines[2].split()[:7] == ["2", "beta", "failed", "50.0", "10.0", "ok", "3"]
    assert lines[2].endswith("consumer command exited with status 3")
    assert lines[3].split()[:7] == ["3", "gamma", "evicted", "1.0", "0.0", "BAD", "-"]
    assert "Total data sent = 47.7 MiB" in out
    assert "Transfer time = 4.000 seconds, throughput = 12.5 MB/s" in out
    assert "The pipeline was emptied in 0.250 seconds" in out
    assert "2 of 3 node(s) failed" in err


def test_plain_lines_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    view = EventView(json_mode=False, role="send")
    with view:
        view.event(Event("joined", "alpha joined (1/3)"))
        view.event(Event("progress", "produced 12.0 MB", data={"produced": 12_000_000, "nodes": [
            {"node": "10.0.0.2:4000", "name": "alpha", "position": 1, "state": "active",
             "bytes": 11_000_000, "mb_per_s": 11.0}]}))
    err = capsys.readouterr().err.splitlines()
    assert err == ["ka: alpha joined (1/3)", "ka: produced 12.0 MB; alpha 11MB active"]


def test_json_mode_is_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    view = EventView(json_mode=True, role="send")
    view.event(Event("evicted", "beta evicted", node="10.0.0.3:4000", time=1.0))
    view.summary(REPORT)
    lines = capsys.readouterr().out.splitlines()
    assert json.loads(lines[0]) == {"event": "evicted", "time": 1.0, "node": "10.0.0.3:4000",
                                    "message": "beta evicted"}
    summary = json.loads(lines[1])
    assert summary["event"] == "summary" and summary["ok"] is False
    assert [n["state"] for n in summary["nodes"]] == ["ok", "failed", "evicted"]
    assert len(lines) == 2


HOSTILE = ["[/]", "[bold red]x", "[link=http://x]y[/link]", "evil\x1b[2J\rname"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_node_names_are_shown_as_text_on_a_terminal(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node named `[/]` made `ka send` raise MarkupError on a terminal and end the session."""
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    view = EventView(json_mode=False, role="send")
    assert view.tty
    with view:
        view.event(Event("joined", f"{name} joined (1/1)"))
        view.event(Event("progress", "produced 1.0 MB", data={"produced": 1_000_000, "nodes": [
            {"node": "10.0.0.2:4000", "name": name, "position": 1, "state": "active",
             "bytes": 1_000_000, "mb_per_s": 1.0}]}))
        view.event(Event("failed", f"{name}: consumer said [/] {name}"))
    shown = term.getvalue()
    assert printable(name) in shown  # literally, brackets and all
    assert "\x1b[2J" not in shown and "\r" not in printable(name)


def test_hostile_names_in_plain_lines_and_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    view = EventView(json_mode=False, role="send")
    view.event(Event("joined", "x\x1b]0;owned\x07 joined"))
    bad = NodeReport("10.0.0.2:4000", "[/]\x1b[31m", 1, "failed", 0, 1.0, False, 1,
                     "[bold]reason\r\nka: forged line")
    view.summary(SessionReport((bad,), 0, 1.0, 0.0, "ab" * 32))
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x07" not in err
    assert "x\\x1b]0;owned\\x07 joined" in err
    assert "[/]\\x1b[31m" in out and "[bold]reason\\x0d\\x0aka: forged line" in out


def _thousand() -> SessionReport:
    nodes = []
    for i in range(1, 1001):
        state, reason, ok = "ok", None, True
        if i in (17, 503):
            state, reason, ok = "evicted", "no heartbeat for 2.3 s", False
        elif i == 640:
            state, reason = "failed", "consumer command exited with status 1"
        seconds = 40.0 if i == 321 else 4.0 + i / 1000  # node 321 is the slowest
        nodes.append(NodeReport(f"10.0.{i // 250}.{i % 250 + 1}:4000", f"n{i:04}", i, state,
                                50_000_000, seconds, ok, 0 if ok else None, reason))
    return SessionReport(tuple(nodes), 50_000_000, 5.0, 0.5, "ab" * 32)


def test_the_summary_of_a_thousand_nodes_shows_failures_then_the_slowest_and_totals(
        capsys: pytest.CaptureFixture[str]) -> None:
    EventView(json_mode=False, role="send").summary(_thousand())
    out, err = capsys.readouterr()
    rows = out.splitlines()[1:21]
    assert [r.split()[1] for r in rows[:3]] == ["n0017", "n0503", "n0640"]
    assert rows[3].split()[1] == "n0321"  # then the slowest first
    assert [r.split()[1] for r in rows[4:6]] == ["n1000", "n0999"]
    assert "1,000 nodes: 2 evicted, 1 failed, 997 ok; MB/s slowest 1.2" in out
    assert len(out.splitlines()) == 1 + 20 + 1 + 3
    assert "3 of 1000 node(s) failed" in err


def test_progress_of_a_thousand_nodes_stays_one_short_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"node": f"10.0.0.{i}:4000", "name": f"n{i:04}", "position": i,
             "state": "evicted" if i == 9 else "active", "bytes": 10_000_000,
             "mb_per_s": 1.0 if i == 700 else 11.0} for i in range(1, 1001)]
    view = EventView(json_mode=False, role="send")
    view.event(Event("progress", "produced 12.0 MB", data={"produced": 12, "nodes": rows}))
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("ka: produced 12.0 MB; n0009 10MB evicted, n0700 10MB active, n0001")
    assert line.endswith("1,000 nodes: 1 evicted, 999 active; MB/s slowest 1.0, median 11.0, "
                         "fastest 11.0; 20 shown: failures first, then the slowest")
    assert len(line) < 600


def test_the_live_table_of_a_thousand_nodes_fits_a_screen() -> None:
    from rich.console import Console

    rows = [{"node": f"10.0.0.{i}:4000", "name": f"n{i:04}", "position": i,
             "state": "active", "bytes": 10_000_000, "mb_per_s": 11.0} for i in range(1, 1001)]
    view = EventView(json_mode=False, role="send")
    view._rows = rows
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(view._table())
    text = console.export_text()
    assert len(text.splitlines()) < 30 and "1,000 nodes: 1,000 active" in text


def test_json_events_of_a_thousand_nodes_are_one_line_each(
        capsys: pytest.CaptureFixture[str]) -> None:
    view = EventView(json_mode=True, role="send")
    rows = [{"node": f"10.0.0.{i}:4000", "name": f"n\n{i}", "position": i, "state": "active",
             "bytes": 1, "mb_per_s": 1.0} for i in range(1, 1001)]
    view.event(Event("progress", "produced 1 MB", data={"produced": 1, "nodes": rows}))
    view.summary(_thousand())
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert len(json.loads(lines[0])["nodes"]) == 1000 and len(json.loads(lines[1])["nodes"]) == 1000


def test_the_summary_names_a_node_moved_to_the_tail(capsys: pytest.CaptureFixture[str]) -> None:
    moved = NodeReport("10.0.0.5:4000", "node3", 4, "ok", 50_000_000, 17.0, True, 0, None,
                       moved="2.9 MB/s against 11.8 MB/s for node2, its parent")
    EventView(json_mode=False, role="send").summary(
        SessionReport((*REPORT.nodes, moved), 50_000_000, 4.0, 13.0, "ab" * 32))
    out, _ = capsys.readouterr()
    assert "node3 moved to the tail: 2.9 MB/s against 11.8 MB/s for node2, its parent" in out
    EventView(json_mode=True, role="send").summary(
        SessionReport((moved,), 50_000_000, 4.0, 13.0, "ab" * 32))
    summary = json.loads(capsys.readouterr().out)
    assert summary["nodes"][0]["moved"] == moved.moved
