"""The golden node's session sequence with an in-memory transport."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from ka.clone.deploy import ReleaseHookResult, SessionSettings, joined_from, run_clone
from ka.clone.plan import ClonePlan, GoldenDisk, GoldenPartition, Stream
from ka.clone.report import InstallReport, StepRecord
from ka.errors import KaError, UsageError
from ka.transport import TransportError
from ka.transport.options import NodeReport, SendOptions, SessionReport

PLAN = ClonePlan(
    prefix="t", nodes=3,
    disks=(GoldenDisk("sda", "label gpt\nlinux fill fs=ext4 mount=/\n", 1 << 30),),
    partitions=(GoldenPartition("sda", 1, "ext4", "/", content="tar"),),
    streams=(Stream("t-fs-1", "tar", "sda", 1, "/"),),
    fstab="", release_delay=5,
)


def node(name: str | None, pos: int, state: str = "ok", attachment: bytes | None = None,
         reason: str | None = None, at: int | None = None) -> NodeReport:
    """A node at position `pos` of a session, joined from 10.0.0.AT (default: POS)."""
    return NodeReport(f"10.0.0.{at or pos}:{4000 + pos}", name, pos, state, 100, 1.0,
                      state == "ok", 0, reason, attachment)


def install_report(name: str, pos: int, reason: str | None = None) -> bytes:
    step = StepRecord("receive plan", "ok", 0.1, 0.0)
    return InstallReport(name, pos, "failed" if reason else "ok", reason, (step,), (), 0.0,
                         2.0).to_json().encode()


class FakeSend:
    def __init__(self, reports: dict[str, SessionReport | Exception]):
        self.reports = reports
        self.calls: list[SendOptions] = []

    def __call__(self, source: Any, options: SendOptions, callback: Any) -> SessionReport:
        self.calls.append(options)
        result = self.reports[options.session or ""]
        if isinstance(result, Exception):
            raise result
        return result


def session(*nodes: NodeReport) -> SessionReport:
    return SessionReport(tuple(nodes), 100, 1.0, 0.1, "d" * 64)


def test_evicted_node_is_not_waited_for_and_reports_are_stored(tmp_path: Path) -> None:
    fake = FakeSend({
        "t-plan": session(node(None, 1), node(None, 2), node(None, 3)),
        "t-fs-1": session(node("node01", 1), node("node02", 2, "evicted", reason="killed"),
                          node("node03", 3, "failed", reason="tar exited 2")),
        "t-done": session(node("node01", 1, attachment=install_report("node01", 1)),
                          node("node03", 2, attachment=install_report("node03", 3, "tar"), at=3)),
    })
    settings = SessionSettings(logs_dir=str(tmp_path / "logs"), join_timeout=7)
    result = run_clone(PLAN, settings, send=fake)
    assert [c.nodes for c in fake.calls] == [3, 3, 2]
    assert [(c.min_nodes, c.wait_timeout) for c in fake.calls] == [(None, None), (1, 7), (1, 7)]
    assert fake.calls[-1].release_delay == 0.5
    assert [(o.name, o.result) for o in result.nodes] == [
        ("node01", "ok"), ("node02", "failed"), ("node03", "failed")]
    assert "evicted in t-fs-1" in (result.nodes[1].reason or "")
    assert not result.ok
    stored = sorted(p.name for p in (tmp_path / "logs/t").iterdir())
    assert stored == ["node01.json", "node03.json", "summary.json"]
    summary = json.loads((tmp_path / "logs/t/summary.json").read_text())
    assert [n["result"] for n in summary["nodes"]] == ["ok", "failed", "failed"]


def test_a_node_evicted_for_no_progress_is_still_waited_for(tmp_path: Path) -> None:
    # A slow node is evicted from the stream but told so: it goes on and reports its failure,
    # so the next session waits for it too, and a node still busy with its fix-ups is not
    # left out because the evicted one came first.
    slow = NodeReport("10.0.0.2:4000", "node02", 2, "evicted", 10, 1.0, False, None,
                      "no progress for 5 s", None, stalled=True)
    fake = FakeSend({
        "t-plan": session(node(None, 1), node(None, 2), node(None, 3)),
        "t-fs-1": session(node("node01", 1), slow, node("node03", 3)),
        "t-done": session(node("node01", 1, attachment=install_report("node01", 1)),
                          node("node02", 2, attachment=install_report("node02", 2, "evicted")),
                          node("node03", 3, attachment=install_report("node03", 3))),
    })
    result = run_clone(PLAN, SessionSettings(logs_dir=str(tmp_path)), send=fake)
    assert [c.nodes for c in fake.calls] == [3, 3, 3]
    assert [(o.name, o.result) for o in result.nodes] == [
        ("node01", "ok"), ("node02", "failed"), ("node03", "ok")]


def test_a_failed_stream_still_reaches_the_final_session(tmp_path: Path) -> None:
    fake = FakeSend({
        "t-plan": session(node(None, 1)),
        "t-fs-1": TransportError("the producer command exited with status 2"),
        "t-done": session(node("node01", 1, attachment=install_report("node01", 1, "cut"))),
    })
    one = ClonePlan(**{**PLAN.__dict__, "nodes": 1})
    result = run_clone(one, SessionSettings(logs_dir=str(tmp_path)), send=fake)
    assert [c.session for c in fake.calls] == ["t-plan", "t-fs-1", "t-done"]
    assert result.errors and "t-fs-1" in result.errors[0]
    assert not result.ok


def test_all_ok(tmp_path: Path) -> None:
    fake = FakeSend({
        "t-plan": session(node(None, 1), node(None, 2)),
        "t-fs-1": session(node("a", 1), node("b", 2)),
        "t-done": session(node("b", 1, attachment=install_report("b", 2), at=2),
                          node("a", 2, attachment=install_report("a", 1), at=1)),
    })
    two = ClonePlan(**{**PLAN.__dict__, "nodes": 2})
    result = run_clone(two, SessionSettings(logs_dir=str(tmp_path)), send=fake)
    assert result.ok and [o.name for o in result.nodes] == ["a", "b"]
    assert [(c.session, c.port) for c in fake.calls] == [
        ("t-plan", 30765), ("t-fs-1", 30766), ("t-done", 30767)]


def test_eta_and_expected_bytes() -> None:
    from ka.clone.view import eta, expected_bytes

    plan = ClonePlan(**{**PLAN.__dict__, "partitions": (
        GoldenPartition("sda", 1, "ext4", "/", used=300_000_000, content="tar"),)})
    assert expected_bytes(plan) == {"t-fs-1": 300_000_000}
    assert eta(300_000_000, {"bytes": 100_000_000, "mb_per_s": 10.0, "state": "active"}) == "0:20"
    assert eta(300_000_000, {"bytes": 100_000_000, "mb_per_s": 0.0, "state": "active"}) == ""
    assert eta(0, {"bytes": 1, "mb_per_s": 1.0, "state": "active"}) == ""
    assert eta(10, {"bytes": 10, "mb_per_s": 1.0, "state": "done"}) == ""


def test_with_a_report_session_the_hook_runs_before_the_release(tmp_path: Path) -> None:
    fake = FakeSend({
        "t-plan": session(node(None, 1), node(None, 2)),
        "t-fs-1": session(node("a", 1), node("b", 2)),
        "t-report": session(node("a", 1, attachment=install_report("a", 1)),
                            node("b", 2, attachment=install_report("b", 2, "tar failed"))),
        "t-done": session(node("a", 1), node("b", 2, "failed", reason="gone")),
    })
    plan = ClonePlan(**{**PLAN.__dict__, "nodes": 2, "reports_before_release": True})
    hooked: list[tuple[int, list[tuple[str, str, str | None]]]] = []

    def before_release(outcomes: tuple[Any, ...]) -> ReleaseHookResult:
        hooked.append((len(fake.calls), [(o.name, o.result, o.address) for o in outcomes]))
        return ReleaseHookResult({"switched": ["a"]})

    result = run_clone(plan, SessionSettings(logs_dir=str(tmp_path)), send=fake,
                       before_release=before_release)
    assert [(c.session, c.port, c.release_delay) for c in fake.calls] == [
        ("t-plan", 30765, None), ("t-fs-1", 30766, None), ("t-report", 30767, None),
        ("t-done", 30768, 0.5)]
    # after t-report, before t-done (the release), with the outcomes known then
    assert hooked == [(3, [("a", "ok", "10.0.0.1"), ("b", "failed", "10.0.0.2")])]
    assert [(o.name, o.result) for o in result.nodes] == [("a", "ok"), ("b", "failed")]
    assert result.before_release == {"switched": ["a"]}
    summary = json.loads((tmp_path / "t/summary.json").read_text())
    assert summary["before_release"] == {"switched": ["a"]}
    assert summary["nodes"][0]["address"] == "10.0.0.1"


def one_node_reporting_before_release() -> tuple[FakeSend, ClonePlan]:
    """One node "a" that installs and hands its report over before the release."""
    fake = FakeSend({
        "t-plan": session(node(None, 1)),
        "t-fs-1": session(node("a", 1)),
        "t-report": session(node("a", 1, attachment=install_report("a", 1))),
        "t-done": session(node("a", 1)),
    })
    return fake, ClonePlan(**{**PLAN.__dict__, "nodes": 1, "reports_before_release": True})


@pytest.mark.parametrize(("error", "said"), [
    (KaError("could not write a boot menu"), "could not write a boot menu"),
    (PermissionError(13, "Permission denied", "/var/lib/ka/pxe/state.json"),
     "PermissionError: [Errno 13] Permission denied: '/var/lib/ka/pxe/state.json'"),
    (IsADirectoryError(21, "Is a directory", "/var/lib/ka/pxe/nodes"),
     "IsADirectoryError: [Errno 21] Is a directory: '/var/lib/ka/pxe/nodes'"),
])
def test_a_failing_hook_is_a_golden_error_and_the_nodes_are_still_released(
        tmp_path: Path, error: Exception, said: str) -> None:
    fake, plan = one_node_reporting_before_release()

    def broken(outcomes: tuple[Any, ...]) -> ReleaseHookResult:
        raise error

    result = run_clone(plan, SessionSettings(logs_dir=str(tmp_path)), send=fake,
                       before_release=broken)
    assert [c.session for c in fake.calls] == ["t-plan", "t-fs-1", "t-report", "t-done"]
    assert result.errors == (f"before the release: {said}",)
    assert result.nodes[0].result == "ok" and not result.ok
    summary = json.loads((tmp_path / "t/summary.json").read_text())
    assert summary["errors"] == [f"before the release: {said}"]
    assert "before_release" not in summary


def test_what_the_hook_finds_wrong_fails_the_run_and_is_kept(tmp_path: Path) -> None:
    fake, plan = one_node_reporting_before_release()
    result = run_clone(plan, SessionSettings(logs_dir=str(tmp_path)), send=fake,
                       before_release=lambda outcomes: ReleaseHookResult(
                           {"left": ["a"]}, ("a still boots ka",)))
    assert [c.session for c in fake.calls][-1] == "t-done"
    assert result.errors == ("before the release: a still boots ka",)
    assert result.nodes[0].result == "ok" and not result.ok
    summary = json.loads((tmp_path / "t/summary.json").read_text())
    assert summary["errors"] == ["before the release: a still boots ka"]
    assert summary["before_release"] == {"left": ["a"]}


@pytest.mark.parametrize(("node_id", "address"), [
    ("10.0.0.1:4000", "10.0.0.1"),
    ("[fd00::2]:4000", "fd00::2"),
    ("fd00::2:4000", "fd00::2"),
    ("[::ffff:10.9.0.12]:4000", "10.9.0.12"),  # a sender bound to :: sees IPv4 nodes so
    ("::ffff:10.9.0.12:4000", "10.9.0.12"),
    ("golden:4000", "golden"),
    (":4000", None),
])
def test_the_address_a_node_joined_from_is_written_as_the_node_table_does(
        node_id: str, address: str | None) -> None:
    assert joined_from(node_id) == address


def test_a_node_that_joined_over_ipv6_is_matched_by_its_address(tmp_path: Path) -> None:
    from ka.boot.nodes import NodeEntry
    from ka.clone.bootswitch import match_node

    def at(node_id: str, n: NodeReport) -> NodeReport:
        return dataclasses.replace(n, node=node_id)

    fake = FakeSend({
        "t-plan": session(at("[::ffff:10.9.0.12]:4000", node(None, 1)),
                          at("[fd00::7]:4000", node(None, 2))),
        "t-fs-1": session(node("a", 1), node("b", 2)),
        "t-done": session(node("a", 1, attachment=install_report("a", 1)),
                          node("b", 2, attachment=install_report("b", 2))),
    })
    result = run_clone(ClonePlan(**{**PLAN.__dict__, "nodes": 2}),
                       SessionSettings(logs_dir=str(tmp_path)), send=fake)
    assert [o.address for o in result.nodes] == ["10.9.0.12", "fd00::7"]
    table = (NodeEntry("52:54:00:00:00:02", "10.9.0.12", "node02"),)
    matched = match_node(result.nodes[0], table)
    assert matched is not None and matched.mac == "52:54:00:00:00:02"


@pytest.mark.parametrize(("changes", "port", "message"), [
    ({"compress": "gzip"}, 30765, "unknown compression 'gzip'"),
    ({"compress": "zstd:42"}, 30765, "zstd level 42 out of range"),
    ({"release_delay": -5}, 30765, "--release-delay must not be negative"),
    ({}, 65534, "the 3 sessions need ports up to 65536, above 65535"),
])
def test_bad_settings_are_refused_before_any_session(tmp_path: Path, changes: dict[str, Any],
                                                     port: int, message: str) -> None:
    # The transport would refuse them only in a later session, after the nodes partitioned.
    fake = FakeSend({})
    plan = ClonePlan(**{**PLAN.__dict__, **changes})
    with pytest.raises(UsageError, match=re.escape(message)):
        run_clone(plan, SessionSettings(logs_dir=str(tmp_path), port=port), send=fake)
    assert fake.calls == []


def test_live_table_shows_each_nodes_step(capsys: pytest.CaptureFixture[str]) -> None:
    from ka.clone.view import LiveTable, node_step, session_steps
    from ka.transport import Event

    plan = ClonePlan(**{**PLAN.__dict__, "reports_before_release": True, "streams": (
        *PLAN.streams, Stream("t-raw-1", "raw", "sda", 2, size=1 << 20))})
    steps = session_steps(plan)
    assert steps == {
        "t-plan": ("receive plan", "partition and format"),
        "t-fs-1": ("extract /", "next stream"),
        "t-raw-1": ("raw copy sda:2", "fix-ups"),
        "t-report": ("hand report over", "wait for the release"),
        "t-done": ("release barrier", "released"),
    }
    assert node_step(steps, "t-plan", "done") == "partition and format"
    assert node_step(steps, "t-fs-1", "active") == "extract /"
    assert node_step(steps, "t-fs-1", "evicted") == "extract /: evicted"
    table = LiveTable({"t-fs-1": 10_000_000}, steps)  # not a terminal: progress lines
    rows = [{"node": "10.0.0.1:4000", "name": "node01", "position": 1, "state": "active",
             "bytes": 4_000_000, "mb_per_s": 2.0},
            {"node": "10.0.0.2:4000", "name": "node02", "position": 2, "state": "done",
             "bytes": 10_000_000, "mb_per_s": 0.0}]
    table.event("t-fs-1", Event("progress", "produced 10.0 MB", data={"nodes": rows}))
    table.close()
    assert capsys.readouterr().err == (
        "ka: [t-fs-1] produced 10.0 MB; node01 extract / 4MB 2.0MB/s active ETA 0:03, "
        "node02 next stream 10MB 0.0MB/s done\n")


def test_the_plan_session_may_start_with_the_nodes_present_after_a_wait() -> None:
    from ka.clone.deploy import session_options

    settings = SessionSettings(wait_timeout=30.0, min_nodes=2, join_timeout=7)
    first = session_options(PLAN, settings, PLAN.plan_session, 3)
    assert (first.wait_timeout, first.min_nodes, first.nodes) == (30.0, 2, 3)
    later = session_options(PLAN, settings, PLAN.streams[0].session, 2)
    assert (later.wait_timeout, later.min_nodes) == (7, 1)
    default = session_options(PLAN, SessionSettings(), PLAN.plan_session, 3)
    assert (default.wait_timeout, default.min_nodes) == (None, None)  # waits for all 3


def test_clone_options_wait_timeout_and_min_nodes_are_checked(
        capsys: pytest.CaptureFixture[str]) -> None:
    from ka.cli import main

    assert main(["clone", "--min-nodes", "2", "--nodes", "3", "--dry-run"]) == 2
    assert "--min-nodes needs --wait-timeout" in capsys.readouterr().err
    assert main(["clone", "--dry-run"]) == 2
    assert "--nodes is required" in capsys.readouterr().err
    assert main(["clone", "--nodes", "1", "--serve"]) == 2
    assert "--serve needs --image" in capsys.readouterr().err
    assert main(["clone", "--nodes", "1", "--until", "3"]) == 2
    assert "need --serve" in capsys.readouterr().err


def test_install_without_prefix_or_host_looks_for_the_default_prefix() -> None:
    from ka.cli import build_parser

    args = build_parser().parse_args(["install"])
    assert args.session_prefix is None and args.host is None
    from ka.clone.install import Installer, InstallOptions

    seen: list[str] = []

    def receive(sink: Any, options: Any) -> Any:
        seen.append(options.session)
        raise TransportError("stop here")

    installer = Installer(InstallOptions(prefix=None, host=None), receive=receive)
    with pytest.raises(KaError):
        installer.run()
    assert seen == ["ka-plan"]


def test_reports_go_to_var_log_ka_by_default_and_the_end_says_where(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from ka.clone import cli
    from ka.clone.deploy import CloneResult, NodeOutcome, store_logs

    root = tmp_path / "golden"
    (root / "etc").mkdir(parents=True)
    (root / "etc/fstab").write_text("LABEL=root / ext4 defaults 0 1\n")
    desc = tmp_path / "sda.desc"
    desc.write_text("label gpt\nlinux fill fs=ext4 mount=/ label=root\n")
    seen: list[str] = []

    def fake_run_clone(plan: ClonePlan, settings: SessionSettings, on_event: Any,
                       **_kw: Any) -> CloneResult:
        seen.append(settings.logs_dir)
        # Stored where a test may write, under the directory the command line chose.
        base = tmp_path / "stored" / settings.logs_dir.lstrip("/")
        outcomes = (NodeOutcome("node01", 1, "ok", None),)
        return CloneResult((), outcomes, store_logs(str(base), plan, (), outcomes, ()))

    monkeypatch.setattr(cli, "run_clone", fake_run_clone)
    parser = argparse.ArgumentParser(prog="ka")
    cli.register(parser.add_subparsers(dest="command"))
    argv = ["clone", "-n", "1", "--root", str(root), "--desc", f"sda={desc}",
            "--session-prefix", "p"]
    assert cli.cmd_clone(parser.parse_args(argv)) == 0
    assert cli.cmd_clone(parser.parse_args([*argv, "--logs", "/srv/clone-logs"])) == 0
    assert cli.cmd_clone(parser.parse_args([*argv, "--json"])) == 0
    assert seen == ["/var/log/ka", "/srv/clone-logs", "/var/log/ka"]
    out, err = capsys.readouterr()
    stored = tmp_path / "stored/var/log/ka/p"
    assert (f"1/1 node(s) cloned; node reports in {stored}/ (summary.json and one file per "
            "node)") in out
    assert f"node reports in {tmp_path}/stored/srv/clone-logs/p/" in out
    assert json.loads((stored / "summary.json").read_text())["nodes"][0]["name"] == "node01"
    assert f"ka: node reports in {stored}/" in err  # --json: stdout is the JSON alone


def test_a_logs_directory_that_cannot_be_made_is_refused_before_any_session(
        tmp_path: Path) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("not a directory\n")
    fake = FakeSend({})
    with pytest.raises(UsageError, match=f"cannot make the logs directory {taken}/t") as e:
        run_clone(PLAN, SessionSettings(logs_dir=str(taken)), send=fake)
    assert e.value.hint is not None and "--logs DIR" in e.value.hint
    assert fake.calls == []


def test_a_node_cannot_file_its_report_under_another_nodes_position(tmp_path: Path) -> None:
    # node03 (a key holder) hands over two reports: one claiming node02's position (which
    # failed) says "installed"; node02's own report says it failed. Reports are filed by
    # the connection they came on: node02 stays failed, node03's forgery lands on node03.
    forged = InstallReport("node02", 2, "ok", None, (), (), 0.0, 1.0, mac="52:54:00:00:00:02")
    fake = FakeSend({
        "t-plan": session(node(None, 1), node(None, 2), node(None, 3)),
        "t-fs-1": session(node("node01", 1), node("node02", 2), node("node03", 3)),
        "t-done": session(
            node("node01", 1, attachment=install_report("node01", 1)),
            node("node02", 2, attachment=install_report("node02", 2, "mkfs failed")),
            node("node02", 3, attachment=forged.to_json().encode()),  # from 10.0.0.3
        ),
    })
    result = run_clone(PLAN, SessionSettings(logs_dir=str(tmp_path)), send=fake)
    by_position = {o.position: o for o in result.nodes}
    assert by_position[2].result == "failed" and by_position[2].reason == "mkfs failed"
    assert by_position[2].address == "10.0.0.2"
    assert by_position[3].address == "10.0.0.3"
    assert by_position[3].report is not None and by_position[3].report.position == 3
    assert not result.ok


def test_reports_from_outside_the_plan_session_are_refused(tmp_path: Path) -> None:
    # A key holder that never joined the plan session reports "installed" for position 1.
    fake = FakeSend({
        "t-plan": session(node(None, 1)),
        "t-fs-1": session(node("node01", 1, "failed", reason="tar exited 2")),
        "t-done": session(node("node01", 1, attachment=install_report("node01", 1, "tar")),
                          node("node01", 2, attachment=install_report("node01", 1), at=99)),
    })
    one = ClonePlan(**{**PLAN.__dict__, "nodes": 1})
    result = run_clone(one, SessionSettings(logs_dir=str(tmp_path)), send=fake)
    assert [(o.position, o.result) for o in result.nodes] == [(1, "failed")]
    assert any("refused the report of node01 from 10.0.0.99" in w for w in result.warnings)
    summary = json.loads((tmp_path / "t/summary.json").read_text())
    assert any("10.0.0.99" in w for w in summary["warnings"])


def test_one_report_per_plan_position(tmp_path: Path) -> None:
    # node01 reports twice (the second time "ok"): only the first counts.
    fake = FakeSend({
        "t-plan": session(node(None, 1)),
        "t-fs-1": session(node("node01", 1)),
        "t-done": session(node("node01", 1, attachment=install_report("node01", 1, "tar")),
                          node("node01", 2, attachment=install_report("node01", 1), at=1)),
    })
    one = ClonePlan(**{**PLAN.__dict__, "nodes": 1})
    result = run_clone(one, SessionSettings(logs_dir=str(tmp_path)), send=fake)
    assert [(o.position, o.result) for o in result.nodes] == [(1, "failed")]
    assert any("reported already" in w for w in result.warnings)
