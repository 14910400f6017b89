"""`ka clone`: the golden node runs the plan's sessions one after another.

Each session is one chain broadcast. After the plan, a session waits only for the nodes that
are still alive, and never forever: after `join_timeout` it starts with whoever came. A node
that lost contact in one session is not waited for in the next; one evicted because it made
no progress (a slow node) was told so and still comes to report its failure, so it is. The
last session is the release barrier in which every node hands over its install report. When
the plan asks for it (`ka clone --pxe`), the reports come in a session of their own just
before the barrier, and `before_release` sees them while every node still waits to be
released: nothing reboots before the golden node has acted on them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ka.clone import tarstream
from ka.clone.endpoints import TarSource
from ka.clone.plan import ClonePlan, Stream
from ka.clone.report import InstallReport
from ka.errors import KaError, UsageError
from ka.ports import SESSION_PORT


class CloneFailed(KaError):
    exit_code = 1


# Where a root tool keeps what it did, and admins look: not the directory it was started from.
DEFAULT_LOGS = "/var/log/ka"


@dataclass(frozen=True)
class SessionSettings:
    root: str = "/"
    port: int = SESSION_PORT
    key: bytes | None = None
    identity: bytes | None = None  # the golden's Ed25519 key: signs every stream
    join_timeout: float = 900.0  # later sessions start with whoever came after this long
    stall_timeout: float = 5.0
    bind: str = "0.0.0.0"
    logs_dir: str = DEFAULT_LOGS  # node reports go to LOGS_DIR/PREFIX/
    logs_name: str | None = None  # the run's directory in logs_dir (default: the prefix)
    # The plan session: start with whoever came after `wait_timeout` if at least
    # `min_nodes` did (default: wait for every node), or `gather` s after the first came.
    wait_timeout: float | None = None
    min_nodes: int | None = None
    gather: float | None = None
    stop: threading.Event | None = None  # set: every session of the run ends at once
    source: str | None = None  # what is deployed, for the reports: "golden HOST", "image NAME"


@dataclass(frozen=True)
class NodeOutcome:
    name: str
    position: int  # in the plan session
    result: str  # "ok" | "failed"
    reason: str | None
    report: InstallReport | None = None
    address: str | None = None  # the node's IP address as the golden node saw it join


@dataclass(frozen=True)
class CloneResult:
    sessions: tuple[tuple[str, Any], ...]  # (session name, SessionReport)
    nodes: tuple[NodeOutcome, ...]
    logs: str
    errors: tuple[str, ...] = ()  # golden-side failures (a producer that failed)
    warnings: tuple[str, ...] = ()  # e.g. what tar said while reading a live tree
    before_release: Mapping[str, Any] | None = None  # what the BeforeRelease hook did

    @property
    def ok(self) -> bool:
        return bool(self.nodes) and all(n.result == "ok" for n in self.nodes) and not self.errors


@dataclass
class _Progress:
    alive: int
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    before_release: Mapping[str, Any] | None = None


EventSink = Callable[[str, Any], None]  # (session name, transport Event)


@dataclass(frozen=True)
class ReleaseHookResult:
    """What a `BeforeRelease` hook did (kept in the result and in summary.json), and what it
    found that fails the run (golden-side errors; the nodes are released all the same)."""

    record: Mapping[str, Any]
    errors: tuple[str, ...] = ()


# Called with every node's outcome once the reports are in and before any node is released
# (only when the plan has a `report_session`). Any exception it raises (a KaError, an OSError
# reading the pxe state...) is a golden-side error of the clone; the nodes are released all
# the same and the logs stored.
BeforeRelease = Callable[[tuple["NodeOutcome", ...]], ReleaseHookResult]


def source_for(plan: ClonePlan, stream: Stream, root: str) -> Any:
    from ka.transport import FileSource

    if stream.kind == "tar":
        assert stream.mountpoint is not None
        src = os.path.join(os.path.realpath(root), stream.mountpoint.lstrip("/"))
        return TarSource(tarstream.create_argv(src, stream.excludes, selinux=plan.selinux))
    part = next(p for p in plan.partitions if (p.disk, p.number) == (stream.disk, stream.number))
    assert part.device is not None
    return FileSource(part.device)


def session_options(plan: ClonePlan, settings: SessionSettings, name: str, nodes: int) -> Any:
    """The transport options of one session of the plan."""
    from ka.transport import SendOptions

    first = name == plan.plan_session
    return SendOptions(
        nodes=nodes,
        session=name,
        port=plan.session_port(name, settings.port),
        key=settings.key,
        identity=settings.identity,
        stall_timeout=settings.stall_timeout,
        bind=settings.bind,
        min_nodes=settings.min_nodes if first else 1,
        wait_timeout=settings.wait_timeout if first else settings.join_timeout,
        gather=settings.gather if first else None,
        compress=plan.compress if any(s.session == name for s in plan.streams) else None,
        release_delay=(plan.release_delay / 10 if plan.release_delay else None)
        if name == plan.done_session else None,
    )


def check_settings(plan: ClonePlan, settings: SessionSettings) -> None:
    """Refuse, before anything is sent, what the transport would refuse in a later session
    (a compression, a release delay, the last session's port): by then the nodes would have
    partitioned their disks for nothing."""
    from ka.transport.producer import compression_level
    from ka.transport.sender import validate

    compression_level(plan.compress)
    last = plan.session_port(plan.sessions[-1], settings.port)
    if last > 65535:
        raise UsageError(f"--port {settings.port}: the {len(plan.sessions)} sessions need "
                         f"ports up to {last}, above 65535",
                         hint=f"use a --port of at most {65536 - len(plan.sessions)}")
    for name in plan.sessions:
        validate(session_options(plan, settings, name, plan.nodes))


def run_clone(
    plan: ClonePlan,
    settings: SessionSettings,
    on_event: EventSink | None = None,
    send: Callable[..., Any] | None = None,
    before_release: BeforeRelease | None = None,
    sources: Callable[[Stream], Any] | None = None,
) -> CloneResult:
    """Run every session of `plan`; each stream comes from `sources` (an image's stream
    files) or, by default, from the golden tree at `settings.root`."""
    check_settings(plan, settings)
    # Before any node partitions its disk: the reports must have somewhere to go.
    logs_directory(settings.logs_dir, settings.logs_name or plan.prefix)
    run = CloneRun(plan, settings, on_event, send)
    return run.finish(run.plan_session(), before_release, sources)


class CloneRun:
    """The sessions of one plan, in order: `plan_session`, then `finish` (which a serving
    golden node runs in a thread of its own while it gathers the next wave)."""

    def __init__(self, plan: ClonePlan, settings: SessionSettings,
                 on_event: EventSink | None = None, send: Callable[..., Any] | None = None
                 ) -> None:
        from ka.transport import send as transport_send

        self.plan, self.settings, self.on_event = plan, settings, on_event
        self.send_fn = send or transport_send
        self.sessions: list[tuple[str, Any]] = []
        self.started = time.time()

    def one(self, name: str, source: Any, nodes: int,
            stop: threading.Event | None = None) -> Any:
        options = session_options(self.plan, self.settings, name, nodes)
        on_event = self.on_event
        callback = (lambda ev: on_event(name, ev)) if on_event else None
        stop = stop or self.settings.stop
        report = self.send_fn(source, options, callback, **({"stop": stop} if stop else {}))
        self.sessions.append((name, report))
        return report

    def plan_session(self, stop: threading.Event | None = None) -> Any:
        from ka.transport import BytesSource

        plan = self.plan
        first = self.one(plan.plan_session, BytesSource(plan.to_json().encode()), plan.nodes,
                         stop)
        if not any(n.state == "ok" for n in first.nodes):
            raise CloneFailed("no node received the plan", hint=_reasons(first))
        return first

    def finish(self, first: Any, before_release: BeforeRelease | None = None,
               sources: Callable[[Stream], Any] | None = None) -> CloneResult:
        from ka.transport import BytesSource

        plan, settings, one = self.plan, self.settings, self.one
        progress = _Progress(alive=sum(1 for n in first.nodes if n.state == "ok"))
        for stream in plan.streams:
            source = sources(stream) if sources else source_for(plan, stream, settings.root)
            try:
                report = one(stream.session, source, progress.alive)
            except KaError as e:
                # The nodes saw the stream cut and go on as relays; keep going so that every
                # node still reaches the final session and reports.
                progress.errors.append(f"{stream.session}: {e}")
                continue
            progress.alive = sum(1 for n in report.nodes if n.still_running)
            if getattr(source, "stderr", ""):
                progress.warnings.append(f"{stream.session}: tar said: {source.stderr[-2000:]}")
            if progress.alive == 0:
                break
        reports: Any = None
        if progress.alive and plan.report_session:
            try:
                reports = one(plan.report_session, BytesSource(b"ka clone reports\n"),
                              progress.alive)
            except KaError as e:
                progress.errors.append(f"{plan.report_session}: {e}")
            else:
                progress.alive = sum(1 for n in reports.nodes if n.still_running)
            if before_release is not None:
                try:
                    hook = before_release(_outcomes(first, self.sessions[1:], reports))
                except Exception as e:  # noqa: BLE001 - the nodes wait: release them, whatever broke
                    what = str(e) if isinstance(e, KaError) else f"{type(e).__name__}: {e}"
                    progress.errors.append(f"before the release: {what}")
                else:
                    progress.before_release = hook.record
                    progress.errors += [f"before the release: {x}" for x in hook.errors]
        done: Any = None
        if progress.alive:
            try:
                done = one(plan.done_session, BytesSource(b"ka clone done\n"), progress.alive)
            except KaError as e:
                progress.errors.append(f"{plan.done_session}: {e}")
        refused: list[str] = []
        outcomes = _outcomes(first, self.sessions[1:],
                             reports if plan.report_session else done, refused)
        progress.warnings += refused
        logs = store_logs(settings.logs_dir, plan, self.sessions, outcomes, progress.errors,
                          progress.warnings, progress.before_release, settings.logs_name,
                          started=self.started, source=settings.source)
        return CloneResult(tuple(self.sessions), outcomes, logs, tuple(progress.errors),
                           tuple(progress.warnings), progress.before_release)


def _outcomes(first: Any, later: Sequence[tuple[str, Any]], handover: Any,
              refused: list[str] | None = None) -> tuple[NodeOutcome, ...]:
    """Every node's result, from the session in which the nodes handed their reports over.

    A report is filed under the identity of the connection that brought it (`bind_reports`),
    never under the position written inside it; what could not be bound goes to `refused`.
    """
    reports, unreadable, turned_away = bind_reports(first, handover)
    if refused is not None:
        refused += turned_away
    reported = {r.node for r in reports.values()}
    # Nodes that vanished: the last thing any session said about a name that never reported.
    lost: list[tuple[str, str]] = []
    for session, rep in later:
        for n in rep.nodes:
            name = n.name or n.node
            if n.state != "ok" and name not in reported and name not in dict(lost):
                lost.append((name, f"{n.state} in {session}: {n.reason or ''}".strip()))
    out: list[NodeOutcome] = []
    for n in sorted(first.nodes, key=lambda x: x.position):
        r = reports.get(n.position)
        address = joined_from(n.node)
        if n.state != "ok":
            out.append(NodeOutcome(n.name or n.node, n.position, "failed",
                                   f"plan session: {n.reason or n.state}", address=address))
        elif r is None:
            name, reason = lost.pop(0) if lost else (n.name or n.node,
                                                     "did not reach the final session")
            if n.position in unreadable:
                name, reason = unreadable.pop(n.position), "its install report was unreadable"
            out.append(NodeOutcome(name, n.position, "failed", reason, address=address))
        else:
            out.append(NodeOutcome(r.node, n.position, r.result, r.reason, r, address))
    for name in unreadable.values():
        out.append(NodeOutcome(name, 0, "failed", "its install report was unreadable"))
    return tuple(out)


def bind_reports(first: Any, handover: Any
                 ) -> tuple[dict[int, InstallReport], dict[int, str], list[str]]:
    """File each handed-over report under a plan position by who sent it, not what it says.

    A report counts only from an address that a node of the plan session joined from, and
    only for a position that joined from that address and has not reported yet: one node
    cannot speak for another (a failed one "installed", or a chosen PXE menu switched).
    Nodes sharing one address (NAT, one host) cannot be told apart by the connection: among
    them the position written in the report decides. Returns the reports by position,
    the names of the unreadable ones (by position when it is known, else by a negative
    key), and why reports were refused.
    """
    free: dict[str | None, list[int]] = {}
    for n in first.nodes:
        if n.state == "ok":
            free.setdefault(joined_from(n.node), []).append(n.position)
    reports: dict[int, InstallReport] = {}
    unreadable: dict[int, str] = {}
    refused: list[str] = []
    for n in handover.nodes if handover is not None else ():
        if not n.attachment:
            continue
        address, who = joined_from(n.node), n.name or n.node
        left = free.get(address, [])
        if not left:
            refused.append(f"refused the report of {who} from {address}: no node of the plan "
                           "session joined from that address, or it has reported already")
            continue
        try:
            got: InstallReport | None = InstallReport.from_json(n.attachment)
        except (ValueError, TypeError, KeyError):
            got = None
        claimed = got.position if got is not None else None
        position = claimed if claimed in left else left[0] if len(left) == 1 else None
        if position is None:
            if got is None:
                unreadable[-1 - len(unreadable)] = who
            else:
                refused.append(f"refused the report of {who} from {address}: it claims "
                               f"position {claimed}, which did not join from there")
            continue
        left.remove(position)
        if got is None:
            unreadable[position] = who
            continue
        if n.state != "ok" and got.result == "ok":
            got = dataclasses.replace(got, result="failed",
                                      reason=f"final session: {n.reason or n.state}")
        reports[position] = dataclasses.replace(got, position=position)
    return reports, unreadable, refused


def joined_from(node_id: str) -> str | None:
    """The address of a transport node id ("10.0.0.1:4000", "[fd00::1]:4000"), as the node
    table of `ka pxe` writes one: no brackets, an IPv4-mapped IPv6 address as IPv4 (a sender
    bound to "::" sees IPv4 nodes so)."""
    host = node_id.rpartition(":")[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host or None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def store_logs(
    base: str,
    plan: ClonePlan,
    sessions: Sequence[tuple[str, Any]],
    outcomes: Sequence[NodeOutcome],
    errors: Sequence[str],
    warnings: Sequence[str] = (),
    before_release: Mapping[str, Any] | None = None,
    name: str | None = None,
    *,
    started: float | None = None,
    source: str | None = None,
) -> str:
    """One JSON file per node plus a summary, in BASE/PREFIX/ (the original's store_log), or
    BASE/NAME/; `started` and `source` (what was deployed) are for the history of `ka web`."""
    directory = logs_directory(base, name or plan.prefix)
    for o in outcomes:
        if o.report is not None:
            safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in o.name) or "node"
            (directory / f"{safe}.json").write_text(o.report.to_json())
    summary: dict[str, Any] = {
        "prefix": plan.prefix,
        "source": source or (f"golden {plan.golden_hostname}" if plan.golden_hostname else None),
        "started": round(started, 3) if started is not None else None,
        "ended": round(time.time(), 3),
        "errors": list(errors),
        "warnings": list(warnings),
        "sessions": {name: rep.to_json() for name, rep in sessions},
        "nodes": [node_json(o) for o in outcomes],
    }
    if before_release is not None:
        summary["before_release"] = dict(before_release)
    (directory / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return str(directory)


def logs_directory(base: str, prefix: str) -> Path:
    """BASE/PREFIX, made if missing; a UsageError when it cannot be."""
    directory = Path(base, prefix)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot make the logs directory {directory}: {e.strerror}",
                         hint="run as root, or keep the reports elsewhere with --logs DIR"
                         ) from e
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the node reports to {directory}",
                         hint="run as root, or keep the reports elsewhere with --logs DIR")
    return directory


def node_json(o: NodeOutcome) -> dict[str, Any]:
    r = o.report
    return {"name": o.name, "position": o.position, "result": o.result, "reason": o.reason,
            "address": o.address, "interface": r.interface if r else None,
            "mac": r.mac if r else None, "ip": r.ip if r else None}


def _reasons(report: Any) -> str:
    return "; ".join(f"{n.name or n.node}: {n.reason or n.state}" for n in report.nodes) or (
        "no node joined"
    )
