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
