"""The command line of `ka clone --image ... --serve`: waves until --until, one summary."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ka.clone.deploy import BeforeRelease, SessionSettings, check_settings
from ka.clone.plan import ClonePlan
from ka.errors import UsageError
from ka.image.deploy import image_sources
from ka.image.manifest import Manifest
from ka.image.serve import ServeOptions, ServeResult, serve, wave_plan
from ka.signals import stop_on_signals

WAVES = 4  # waves at once, at most; each has a block of ports of its own


def run_serve(args: argparse.Namespace, settings: SessionSettings, plan: ClonePlan,
              directory: Path, manifest: Manifest,
              before_release: BeforeRelease | None = None, live: Any = None) -> int:
    """`live`: a dashboard's model (ka.web.state.Deployment), fed every event and wave."""
    if args.until is not None and args.until < 1:
        raise UsageError("--until must be at least 1")
    if args.batch_wait is not None and args.batch_wait < 0:
        raise UsageError("--batch-wait must not be negative")
    later = len(plan.sessions) - 1
    last = settings.port + WAVES * later
    if last > 65535:
        raise UsageError(f"--port {settings.port}: --serve needs ports up to {last}",
                         hint=f"use a --port of at most {65535 - WAVES * later}")
    for block in range(WAVES):
        check_settings(wave_plan(plan, 1, 1, settings.port + 1 + block * later), settings)
    stop = threading.Event()
    settings = SessionSettings(**{**settings.__dict__, "stop": stop})
    t0 = time.monotonic()

    def say(message: str) -> None:
        print(f"ka: [{time.monotonic() - t0:7.1f}s] {message}", file=sys.stderr, flush=True)

    say(f"serving image {manifest.name} in {plan.plan_session} on port {settings.port}"
        + (f" until {args.until} node(s) are installed" if args.until else
           " until SIGINT/SIGTERM"))
    try:
        with stop_on_signals(stop, lambda: say("ending: every session stops now (SIGINT/SIGTERM)")):
            result = serve(
                lambda number, first, port: wave_plan(plan, number, first, port),
                lambda p: image_sources(directory, manifest, p), settings,
                ServeOptions(until=args.until, gather=args.batch_wait or 0.0, waves=WAVES,
                             wave_nodes=plan.nodes),
                later, on_event=live.event if live is not None else None, say=say,
                before_release=before_release,
                on_wave=(lambda w: live.finish_wave(w.result) if w.result else None)
                if live is not None else None)
    except BaseException as e:
        if live is not None:
            live.close(False, [str(e) or type(e).__name__])
        raise
    rows = node_rows(result)
    record = {"image": manifest.name, "interrupted": result.interrupted,
              "installed": len(result.installed()), "failed_attempts": result.failed_attempts(),
              "errors": result.errors, "ok": result.ok, "nodes": rows,
              "waves": [{"wave": w.number, "started": round(w.started, 3),
                         "seconds": round(w.seconds, 3), "error": w.error,
                         "logs": w.result.logs if w.result else None} for w in result.waves]}
    logs = Path(settings.logs_dir, plan.prefix)
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "serve.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    if live is not None:
        live.close(result.ok, result.errors)
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(serve_summary(result, rows, logs))
    return 0 if result.ok and (args.until is None or len(result.installed()) >= args.until) \
        else 1


def node_rows(result: ServeResult) -> list[dict[str, Any]]:
    rows = []
    for w in result.waves:
        if w.result is None:
            continue
        for n in w.result.nodes:
            moved = [(r.bytes, r.seconds) for name, rep in w.result.sessions[1:]
                     for r in rep.nodes if (r.name or r.node) == n.name and r.seconds]
            total, secs = sum(b for b, _s in moved), sum(s for _b, s in moved)
            rows.append({"node": n.name, "wave": w.number, "result": n.result,
                         "reason": n.reason, "address": n.address,
                         "seconds": round(n.report.seconds, 1) if n.report else None,
                         "mb_per_s": round(total / secs / 1e6, 1) if secs else None})
    return rows


def serve_summary(result: ServeResult, rows: list[dict[str, Any]], logs: Path) -> str:
    lines = ["", "node          wave  result  seconds    MB/s  reason"]
    for r in rows:
        secs = f"{r['seconds']:.1f}" if r["seconds"] is not None else "-"
        rate = f"{r['mb_per_s']:.1f}" if r["mb_per_s"] is not None else "-"
        lines.append(f"{r['node']:<12}  {r['wave']:>4}  {r['result']:<6}  {secs:>7}  "
                     f"{rate:>6}  {r['reason'] or ''}")
    for w in result.waves:
        if w.error:
            lines.append(f"wave {w.number}: {w.error}")
        for e in w.result.errors if w.result else ():
            lines.append(f"wave {w.number}: golden node error: {e}")
    lines += [f"error: {e}" for e in result.errors]
    installed = result.installed()
    failed = result.failed_attempts()
    lines.append(f"\n{len(installed)} node(s) installed in {len(result.waves)} wave(s)"
                 + (f", {failed} failed attempt(s)" if failed else "")
                 + ("; interrupted" if result.interrupted else "")
                 + f"; reports in {logs}/wave-N/, this summary in {logs}/serve.json")
    return "\n".join(lines)
