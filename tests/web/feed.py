"""A deployment fed with the events a 3-node `ka clone` produces, without any network."""

from __future__ import annotations

import json
from pathlib import Path

from ka.clone.deploy import CloneResult, NodeOutcome
from ka.clone.report import InstallReport, StepRecord
from ka.transport import Event
from ka.web.state import Deployment

HOSTILE = "<script>alert(1)</script>"
NAMES = ("node01", HOSTILE, "node03")
PLAN, FS, DONE = "t-plan", "t-fs-1", "t-done"
T0 = 1_700_000_000.0


def ids(session: str) -> list[str]:
    port = {PLAN: 4000, FS: 5000, DONE: 6000}[session]
    return [f"10.0.0.{i}:{port}" for i in (1, 2, 3)]


def rows(session: str, state: str, got: int, names: tuple[str | None, ...] = NAMES,
         failed: int | None = None) -> list[dict[str, object]]:
    return [{"node": node, "name": name, "position": i, "bytes": got, "mb_per_s": 10.0,
             "state": "failed" if i == failed else state}
            for i, (node, name) in enumerate(zip(ids(session), names, strict=True), start=1)]


def session(model: Deployment, name: str, at: float, *, failed: int | None = None,
            names: tuple[str | None, ...] = NAMES) -> None:
    ev = model.event
    ev(name, Event("listening", "waiting for 3 node(s) on port 1", time=at))
    for node, who in zip(ids(name), names, strict=True):
        ev(name, Event("joined", f"{who or node} joined", node=node, time=at + 0.1))
    ev(name, Event("start", "starting with 3 node(s)", data={"order": ids(name)}, time=at + 1))
    ev(name, Event("progress", "produced 1.0 MB",
                   data={"produced": 1_000_000, "nodes": rows(name, "active", 500_000, names)},
                   time=at + 2))
    for i, node in enumerate(ids(name), start=1):
        if i == failed:
            ev(name, Event("failed", f"{names[i - 1]}: consumer exited with status 2",
                           node=node, time=at + 3))
        else:
            ev(name, Event("done", f"{names[i - 1]}: complete, digest verified", node=node,
                           time=at + 3))
    ev(name, Event("progress", "produced 1.0 MB",
                   data={"produced": 1_000_000,
                         "nodes": rows(name, "done", 1_000_000, names, failed)},
                   time=at + 3.5))


def report(name: str, position: int, ok: bool) -> InstallReport:
    steps = (StepRecord("receive plan", "ok", 1.0, T0 + 1),
             StepRecord("partition", "ok" if ok else "failed", 2.0, T0 + 2,
                        "" if ok else "disk too small"),)
    if ok:
        steps += (StepRecord("extract /", "ok", 3.0, T0 + 5, bytes=1_000_000),)
    return InstallReport(name, position, "ok" if ok else "failed",
                         None if ok else "partition: disk too small", steps, (), T0 + 1,
                         7.0 if ok else 3.0)


def outcomes() -> tuple[NodeOutcome, ...]:
    return tuple(NodeOutcome(name, i, "ok" if i != 2 else "failed",
                             None if i != 2 else "partition: disk too small",
                             report(name, i, i != 2), f"10.0.0.{i}")
                 for i, name in enumerate(NAMES, start=1))


def fed(finished: bool = True) -> Deployment:
    model = Deployment("t", 3, source="golden gold", plan_session=PLAN,
                       expected={FS: 2_000_000},
                       steps={PLAN: ("receive plan", "partition and format"),
                              FS: ("extract /", "fix-ups"),
                              DONE: ("hand report over", "released")})
    session(model, PLAN, T0, names=(None, None, None))
    session(model, FS, T0 + 10)
    if finished:
        session(model, DONE, T0 + 20)
        model.finish(CloneResult((), outcomes(), "/logs/t"))
    return model


def stored(logs: Path) -> Path:
    """LOGS/t as `ka clone` stores it (summary.json and one report per node)."""
    d = logs / "t"
    d.mkdir(parents=True)
    nodes = []
    for o in outcomes():
        assert o.report is not None
        safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in o.name)
        (d / f"{safe}.json").write_text(o.report.to_json())
        nodes.append({"name": o.name, "position": o.position, "result": o.result,
                      "reason": o.reason, "address": o.address, "interface": None,
                      "mac": None, "ip": None})
    summary = {"prefix": "t", "source": "golden gold", "started": T0, "ended": T0 + 30,
               "errors": [], "warnings": [],
               "sessions": {"t-plan": {"bytes": 100, "seconds": 1.0},
                            "t-fs-1": {"bytes": 20_000_000, "seconds": 2.0}},
               "nodes": nodes}
    (d / "summary.json").write_text(json.dumps(summary))
    return d
