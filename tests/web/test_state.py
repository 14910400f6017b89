"""The live model, fed with the events of a 3-node clone (tests/web/feed.py)."""

from __future__ import annotations

from ka.transport import Event
from ka.web.state import Deployment

from .feed import FS, HOSTILE, PLAN, T0, fed, ids, session


def test_rows_follow_a_node_across_sessions_by_address_then_name() -> None:
    rows = fed().node_rows()
    assert [r["name"] for r in rows] == ["node01", HOSTILE, "node03"]
    assert [r["key"] for r in rows] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert [r["result"] for r in rows] == ["ok", "failed", "ok"]
    assert rows[1]["reason"] == "partition: disk too small"
    assert [s["session"] for s in rows[0]["sessions"]] == ["t-plan", "t-fs-1", "t-done"]
    assert rows[0]["bytes_total"] == 3_000_000


def test_live_state_before_the_end() -> None:
    model = fed(finished=False)
    snap = model.snapshot()
    assert not snap["finished"] and snap["session"] == FS
    assert [s["state"] for s in snap["sessions"]] == ["ended", "running"]
    assert snap["totals"] == {"nodes": 3, "installed": 0, "failed": 0, "running": 3,
                              "mb_per_s": 0.0, "mb_per_s_node": 0.0, "eta": ""}
    assert [r["step"] for r in model.node_rows()] == ["fix-ups"] * 3


def test_a_failed_node_is_a_failure_at_once_and_comes_first() -> None:
    model = Deployment("t", 3, plan_session=PLAN)
    session(model, PLAN, T0, failed=3)
    rows = model.node_rows(failures_first=True)
    assert rows[0]["name"] == "node03" and rows[0]["failing"]
    assert "consumer exited with status 2" in rows[0]["reason"]
    assert [r["name"] for r in model.node_rows("failed")] == ["node03"]
    assert [r["name"] for r in model.node_rows("running")] == ["node01", HOSTILE]


def test_rate_and_eta_while_active() -> None:
    model = Deployment("t", 3, plan_session=PLAN, expected={FS: 20_000_000})
    rows = [{"node": n, "name": f"n{i}", "position": i, "state": "active",
             "bytes": 10_000_000, "mb_per_s": 5.0} for i, n in enumerate(ids(FS), start=1)]
    model.event(FS, Event("progress", "p", data={"produced": 10_000_000, "nodes": rows}))
    totals = model.snapshot()["totals"]
    assert totals["mb_per_s"] == 15.0 and totals["mb_per_s_node"] == 5.0
    assert totals["eta"] == "0:02"


def test_changes_after_a_version() -> None:
    model = fed(finished=False)
    v = model.version
    assert model.changes(v) is None
    model.event(FS, Event("evicted", "node03 evicted: no progress", node=ids(FS)[2]))
    change = model.changes(v)
    assert change is not None
    assert [n["name"] for n in change["nodes"]] == ["node03"]
    assert [e["event"] for e in change["events"]] == ["evicted"]
    assert change["events"][0]["node"] == "10.0.0.3"
    assert change["deployment"]["totals"]["failed"] == 1


def test_node_by_key_or_name() -> None:
    model = fed()
    assert model.node(HOSTILE)["key"] == "10.0.0.2"  # type: ignore[index]
    assert model.node("10.0.0.2")["name"] == HOSTILE  # type: ignore[index]
    assert model.node("nobody") is None
