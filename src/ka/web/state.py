"""The live model of one deployment, fed by the transport events of `ka clone`.

`Deployment.event(session, ev)` has the signature of `ka clone`'s event sink and is called
from the transport's threads; the web server reads snapshots of it from its own. Every change
bumps one version counter, and each node and each kept event carries the version it was last
changed at, so a client that saw version V asks for what changed after V (`changes`), which is
what the event stream sends.

A node is known to the golden node only through the sessions: its transport id
("ADDR:PORT") is new in every session and its name may come only after the plan (a node
joins the plan session with no name unless given one). A row is therefore matched, in each
session, by that session's id, then by name, then by address when one row alone has it; the
nodes' own reports at the end (`finish`) settle names and results by plan position.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ka.clone.deploy import CloneResult, joined_from
from ka.clone.plan import ClonePlan
from ka.clone.view import eta, expected_bytes, node_step, session_steps

EVENTS_KEPT = 2000  # the event log a late client can catch up from
FAILING = ("failed", "evicted")


@dataclass
class SessionView:
    name: str
    state: str = "waiting"  # waiting | running | ended
    opened: float = 0.0
    started: float | None = None
    ended: float | None = None
    produced: int = 0
    expected: int = 0


@dataclass
class NodeView:
    key: str  # stable in this dashboard; the URL of the node
    name: str | None
    node_id: str | None  # transport id in the node's latest session
    address: str | None
    position: int = 0  # in the chain of its latest session
    plan_position: int = 0  # in the plan session: what the node's report names
    state: str = "waiting"  # the transport's word for it in its latest session
    session: str = ""
    step: str = "join"
    bytes: int = 0  # in its latest session
    total_bytes: int = 0  # in every finished session before it
    mb_per_s: float = 0.0
    eta: str = ""
    result: str | None = None  # "ok" | "failed" once its report is in
    reason: str | None = None
    healed: int = 0  # times it was re-attached to a new parent
    sessions: list[dict[str, Any]] = field(default_factory=list)  # its timeline
    version: int = 0

    @property
    def failing(self) -> bool:
        return self.result == "failed" or (self.result is None and self.state in FAILING)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["name"] = self.label
        out["failing"] = self.failing
        out["bytes_total"] = self.total_bytes + self.bytes
        return out

    @property
    def label(self) -> str:
        return self.name or self.node_id or self.key


class Deployment:
    """What one `ka clone` run (or one `--serve`) has shown so far."""

    def __init__(self, prefix: str, nodes: int, *, source: str = "",
                 plan_session: str | None = None,
                 expected: Mapping[str, int] | None = None,
                 steps: Mapping[str, tuple[str, str]] | None = None,
                 serve: bool = False, clock: Any = time.time) -> None:
        self.prefix, self.nodes_expected, self.source = prefix, nodes, source
        self.plan_session = plan_session or f"{prefix}-plan"
        self.serve = serve
        self.expected = dict(expected or {})
        self.steps = dict(steps or {})
        self._clock = clock
        self.started = clock()
        self.ended: float | None = None
        self.ok: bool | None = None
        self.logs: str | None = None
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.version = 0
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeView] = {}
        self._sessions: dict[str, SessionView] = {}
        self._current = ""
        self._ids: dict[str, dict[str, str]] = {}  # session -> transport id -> key
        self._events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)

    @classmethod
    def of_plan(cls, plan: ClonePlan, source: str, serve: bool = False) -> Deployment:
        return cls(plan.prefix, plan.nodes, source=source, plan_session=plan.plan_session,
                   expected=expected_bytes(plan), steps=session_steps(plan), serve=serve)

    # fed by ka clone ------------------------------------------------------------------
    def event(self, session: str, ev: Any) -> None:
        with self._lock:
            self.version += 1
            self._session(session, ev)
            if ev.kind == "progress":
                for row in ev.data.get("nodes", ()):
                    self._progress(session, row, ev.time)
            elif ev.kind == "start":
                for i, node_id in enumerate(ev.data.get("order", ()), start=1):
                    n = self._node(session, str(node_id), None)
                    n.position, n.state = i, "active"
                    self._enter(n, session, ev.time)
            elif ev.node is not None:
                self._about(session, ev)
            node = self._nodes.get(self._ids.get(session, {}).get(ev.node or "", ""))
            self._events.append({"version": self.version, "time": round(ev.time, 3),
                                 "session": session, "event": ev.kind,
                                 "node": node.key if node else None, "message": ev.message})

    def finish(self, result: CloneResult) -> None:
        """The run is over: every node's result from its own report."""
        with self._lock:
            self.version += 1
            self._settle(result)
            self.ended = self._clock()
            self.ok, self.logs = result.ok, result.logs
            self.errors += result.errors
            self.warnings += result.warnings
            for s in self._sessions.values():
                if s.state != "ended":
                    s.state, s.ended = "ended", s.ended or self.ended

    def finish_wave(self, result: CloneResult) -> None:
        """One wave of a `--serve` ended: its nodes' results, the deployment goes on."""
        with self._lock:
            self.version += 1
            self._settle(result)
            self.errors += result.errors

    def close(self, ok: bool, errors: Iterable[str] = ()) -> None:
        with self._lock:
            self.version += 1
            self.ended, self.ok = self._clock(), ok
            self.errors += list(errors)

    # read by the web server -----------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self._summary()

    def node_rows(self, state: str | None = None, failures_first: bool = False
                  ) -> list[dict[str, Any]]:
        with self._lock:
            rows = [n for n in self._ordered() if state is None or _matches(n, state)]
            if failures_first:
                rows.sort(key=lambda n: not n.failing)  # stable: chain order within
            return [n.to_json() for n in rows]

    def node(self, key: str) -> dict[str, Any] | None:
        """One node by its key, or by its name."""
        with self._lock:
            n = self._find(key)
            if n is None:
                return None
            key = n.key
            out = n.to_json()
            out["events"] = [e for e in self._events if e["node"] == key]
            return out

    def address_of(self, key: str) -> str | None:
        with self._lock:
            n = self._find(key)
            return n.address if n else None

    def _find(self, key: str) -> NodeView | None:
        return self._nodes.get(key) or next(
            (n for n in self._nodes.values() if n.name == key), None)

    def changes(self, after: int) -> dict[str, Any] | None:
        """What changed after version `after` (None: nothing yet); a client too far behind
        the kept events gets them all from the oldest kept."""
        with self._lock:
            if after >= self.version:
                return None
            return {"deployment": self._summary(),
                    "nodes": [n.to_json() for n in self._ordered() if n.version > after],
                    "events": [e for e in self._events if e["version"] > after]}

    # inside the lock --------------------------------------------------------------------
    def _summary(self) -> dict[str, Any]:
        now = self.ended or self._clock()
        nodes = list(self._nodes.values())
        active = [n for n in nodes if n.state == "active" and n.result is None]
        etas = [n.eta for n in active if n.eta]
        return {
            "live": True, "prefix": self.prefix, "source": self.source,
            "nodes_expected": self.nodes_expected, "started": round(self.started, 3),
            "ended": round(self.ended, 3) if self.ended else None,
            "elapsed": round(now - self.started, 1), "finished": self.ended is not None,
            "ok": self.ok, "logs": self.logs, "session": self._current,
            "sessions": [asdict(s) for s in self._sessions.values()],
            "totals": {
                "nodes": len(nodes),
                "installed": sum(1 for n in nodes if n.result == "ok"),
                "failed": sum(1 for n in nodes if n.failing),
                "running": sum(1 for n in nodes if n.result is None and not n.failing),
                "mb_per_s": round(sum((n.mb_per_s for n in active), 0.0), 2),
                "mb_per_s_node": round(sum(n.mb_per_s for n in active) / len(active), 2)
                if active else 0.0,
                "eta": max(etas, key=_seconds) if etas else "",
            },
            "errors": list(self.errors), "warnings": list(self.warnings),
            "version": self.version,
        }

    def _ordered(self) -> list[NodeView]:
        return sorted(self._nodes.values(), key=lambda n: (n.position or 1 << 30, n.key))

    def _session(self, name: str, ev: Any) -> None:
        s = self._sessions.get(name)
        if s is None:
            s = self._sessions[name] = SessionView(name, opened=round(ev.time, 3),
                                                   expected=self.expected.get(name, 0))
            # A run's sessions come one after another, so a new one ends the one before
            # (the waves of --serve run side by side: there a wave's end says it).
            prev = self._sessions.get(self._current)
            if prev is not None and prev.state != "ended" and not self.serve:
                prev.state, prev.ended = "ended", round(ev.time, 3)
            self._current = name
        if ev.kind == "start":
            s.state, s.started = "running", round(ev.time, 3)
        elif ev.kind == "progress":
            s.produced = int(ev.data.get("produced", s.produced))

    def _node(self, session: str, node_id: str, name: str | None) -> NodeView:
        ids = self._ids.setdefault(session, {})
        key = ids.get(node_id)
        if key is None and name is not None:
            key = next((n.key for n in self._nodes.values() if n.name == name), None)
        address = joined_from(node_id)
        if key is None:
            taken = set(ids.values())
            same = [n for n in self._nodes.values()
                    if n.address == address and n.key not in taken]
            if len(same) == 1 and (name is None or same[0].name is None):
                key = same[0].key
        if key is None:
            key = _key(name or address or node_id, self._nodes)
            self._nodes[key] = NodeView(key, name, node_id, address)
        ids[node_id] = key
        n = self._nodes[key]
        n.node_id, n.version = node_id, self.version
        if name and n.name is None:
            n.name = name
        return n

    def _enter(self, n: NodeView, session: str, at: float) -> None:
        """The node's first sign of life in `session`."""
        if n.session == session:
            return
        if n.sessions:
            n.sessions[-1]["ended"] = n.sessions[-1]["ended"] or round(at, 3)
        n.total_bytes += n.bytes
        n.session, n.bytes, n.mb_per_s, n.eta = session, 0, 0.0, ""
        n.sessions.append({"session": session, "started": round(at, 3), "ended": None,
                           "state": n.state, "bytes": 0})

    def _progress(self, session: str, row: Mapping[str, Any], at: float) -> None:
        n = self._node(session, str(row.get("node")), row.get("name"))
        self._enter(n, session, at)
        n.state = str(row.get("state", n.state))
        n.position = int(row.get("position") or n.position)
        if session == self.plan_session:
            n.plan_position = n.position
        n.bytes, n.mb_per_s = int(row.get("bytes") or 0), float(row.get("mb_per_s") or 0.0)
        n.step = node_step(self.steps, session, n.state)
        n.eta = eta(self.expected.get(session, 0), dict(row))
        n.sessions[-1].update(state=n.state, bytes=n.bytes)
        if n.state in ("done", "failed", "evicted") and n.sessions[-1]["ended"] is None:
            n.sessions[-1]["ended"] = round(at, 3)

    def _about(self, session: str, ev: Any) -> None:
        n = self._node(session, str(ev.node), None)
        if ev.kind == "joined":
            self._enter(n, session, ev.time)
            n.state, n.step = "waiting", node_step(self.steps, session, "waiting")
        elif ev.kind in ("done", "failed", "evicted"):
            self._enter(n, session, ev.time)
            n.state = ev.kind
            n.step = node_step(self.steps, session, ev.kind)
            n.sessions[-1].update(state=ev.kind, ended=round(ev.time, 3))
            if ev.kind != "done":
                n.reason = f"{session}: {ev.message}"
        elif ev.kind == "consumer-failed":
            n.reason = f"{session}: {ev.message}"
        elif ev.kind == "reattached":
            n.healed += 1

    def _settle(self, result: CloneResult) -> None:
        by_plan = {n.plan_position: n for n in self._nodes.values() if n.plan_position}
        for o in result.nodes:
            n = next((x for x in self._nodes.values() if x.name == o.name), None)
            first = by_plan.get(o.position)
            if first is not None and n is not None and first is not n:
                # The same node seen twice (no name in the plan session, one address for
                # many nodes): keep one row, with both parts of its timeline.
                first.sessions = sorted(first.sessions + n.sessions, key=lambda s: s["started"])
                first.total_bytes += n.total_bytes + n.bytes
                del self._nodes[n.key]
                n = first
            n = n or first
            if n is None:
                n = self._nodes[_key(o.name, self._nodes)] = NodeView(
                    _key(o.name, self._nodes), o.name, None, o.address)
            n.name, n.result, n.reason = o.name, o.result, o.reason
            n.step = "installed" if o.result == "ok" else "failed"
            n.version = self.version


def _key(wanted: str, taken: Mapping[str, Any]) -> str:
    base = "".join(c if c.isalnum() or c in "-._" else "_" for c in wanted) or "node"
    key, i = base, 1
    while key in taken:
        i += 1
        key = f"{base}~{i}"
    return key


def _matches(n: NodeView, state: str) -> bool:
    if state == "failed":
        return n.failing
    if state == "installed":
        return n.result == "ok"
    if state == "running":
        return n.result is None and not n.failing
    return n.state == state


def _seconds(text: str) -> int:
    minutes, _, seconds = text.partition(":")
    return int(minutes) * 60 + int(seconds or 0)
