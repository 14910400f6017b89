"""Past deployments, from the reports `ka clone` stores: LOGS/PREFIX/summary.json and one
NODE.json per node; a `--serve` run has LOGS/PREFIX/serve.json and a wave-N/ per wave.

Everything here is read from files that nodes partly wrote (names, reasons, steps): it is
returned as data, never interpreted, and a file that cannot be read is an entry that says
so, not an error of the page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

MAX_FILE = 16 << 20  # a report larger than this is not one ka wrote
MAX_ENTRIES = 500  # the newest deployments listed
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class NotFound(Exception):
    pass


def read_json(path: Path) -> Any:
    with path.open("rb") as f:
        data = f.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise ValueError(f"{path.name} is larger than {MAX_FILE >> 20} MiB")
    return json.loads(data)


def deployments(logs: Path) -> list[dict[str, Any]]:
    """Every stored deployment, the newest first (a --serve run: one entry, its waves in it)."""
    out = []
    try:
        entries = [d for d in logs.iterdir() if d.is_dir() and _PART.fullmatch(d.name)]
    except OSError:
        return []
    for d in entries:
        if (d / "serve.json").is_file():
            out.append(_served(d))
        elif (d / "summary.json").is_file():
            out.append(_entry(d.name, d / "summary.json"))
    out.sort(key=lambda e: e.get("ended") or 0, reverse=True)
    return out[:MAX_ENTRIES]


def deployment(logs: Path, name: str) -> dict[str, Any]:
    """One deployment (NAME is PREFIX, or PREFIX/wave-N), with every node's stored report."""
    directory = resolve(logs, name)
    summary_file = directory / "summary.json"
    if not summary_file.is_file():
        if (directory / "serve.json").is_file():
            return _served(directory, name)
        raise NotFound(name)
    entry = _entry(name, summary_file)
    try:
        summary = read_json(summary_file)
    except (OSError, ValueError) as e:
        return {**entry, "nodes": [], "error": str(e)}
    nodes = []
    for row in summary.get("nodes", []) if isinstance(summary, dict) else []:
        if not isinstance(row, dict):
            continue
        report: Any = None
        file = directory / f"{safe_name(str(row.get('name', '')))}.json"
        if file.is_file():
            try:
                report = read_json(file)
            except (OSError, ValueError) as e:
                report = {"error": str(e)}
        nodes.append({**row, "report": report})
    return {**entry, "nodes": nodes, "sessions": summary.get("sessions", {}),
            "errors": summary.get("errors", []), "warnings": summary.get("warnings", [])}


def resolve(logs: Path, name: str) -> Path:
    """LOGS/NAME, for a NAME of one or two plain parts (no "..", no absolute path)."""
    parts = name.split("/")
    if not 1 <= len(parts) <= 2 or not all(_PART.fullmatch(p) for p in parts):
        raise NotFound(name)
    return logs.joinpath(*parts)


def safe_name(name: str) -> str:
    """The file name `ka clone` gives a node's report (see store_logs)."""
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in name) or "node"


def _entry(name: str, file: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "kind": "clone"}
    try:
        s = read_json(file)
        ended = s.get("ended") or file.stat().st_mtime
    except (OSError, ValueError, AttributeError) as e:
        return {**entry, "error": f"unreadable summary: {e}"}
    nodes = [n for n in s.get("nodes", []) if isinstance(n, dict)]
    sessions = s.get("sessions", {}) if isinstance(s.get("sessions"), dict) else {}
    seconds = sum(float(r.get("seconds") or 0) for r in sessions.values())
    streams = [r for k, r in sessions.items() if "-fs-" in k or "-raw-" in k]
    moved = sum(int(r.get("bytes") or 0) for r in streams)
    moving = sum(float(r.get("seconds") or 0) for r in streams)
    started = s.get("started") or ended - seconds
    return {**entry, "prefix": s.get("prefix"), "source": s.get("source"),
            "started": round(started, 3), "ended": round(ended, 3),
            "seconds": round(ended - started, 1), "nodes": len(nodes),
            "installed": sum(1 for n in nodes if n.get("result") == "ok"),
            "failed": sum(1 for n in nodes if n.get("result") != "ok"),
            "bytes": moved, "mb_per_s": round(moved / moving / 1e6, 1) if moving else None,
            "errors": len(s.get("errors") or ()), "ok": bool(nodes) and not s.get("errors")
            and all(n.get("result") == "ok" for n in nodes)}


def _served(directory: Path, name: str | None = None) -> dict[str, Any]:
    name = name or directory.name
    entry: dict[str, Any] = {"name": name, "kind": "serve"}
    file = directory / "serve.json"
    try:
        s = read_json(file)
        ended = file.stat().st_mtime
    except (OSError, ValueError) as e:
        return {**entry, "error": f"unreadable serve.json: {e}"}
    waves = []
    for w in sorted(directory.glob("wave-*/summary.json")):
        waves.append(_entry(f"{name}/{w.parent.name}", w))
    started = min((w["started"] for w in waves if "started" in w), default=ended)
    rows = [r for r in s.get("nodes", []) if isinstance(r, dict)]
    return {**entry, "source": f"image {s.get('image')}" if s.get("image") else None,
            "started": round(started, 3), "ended": round(ended, 3),
            "seconds": round(ended - started, 1), "nodes": len({r.get("node") for r in rows}),
            "installed": int(s.get("installed") or 0),
            "failed": int(s.get("failed_attempts") or 0), "ok": bool(s.get("ok")),
            "interrupted": bool(s.get("interrupted")), "waves": waves, "rows": rows}
