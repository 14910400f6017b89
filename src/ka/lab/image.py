"""`ka lab clone --image`: the golden disk is captured into an image, then detached and
deleted, and the nodes are installed from the image alone.

What the verification needs of the golden outlives it: the tree digest (taken before), the
golden's SSH host keys (the clones must not have them) and a copy of its ESP.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ka.errors import KaError
from ka.image.manifest import read_manifest
from ka.lab.verdict import GoldenReference

if TYPE_CHECKING:
    from ka.lab.clone import LabProcesses


@dataclass(frozen=True)
class CapturedGolden:
    directory: Path
    seconds: float
    stored_bytes: int
    raw_bytes: int
    reference: GoldenReference  # pointing at copies, no longer at the golden disk


def capture_golden(workdir: Path, root: Path, drive: str, desc: Path, raw: Sequence[str],
                   excludes: Sequence[str], key_file: Path | None, compress: str | None,
                   reference: GoldenReference) -> CapturedGolden:
    """Run `ka image capture` on the mounted golden tree, as an admin would."""
    directory = workdir / "image"
    argv = [sys.executable, "-m", "ka", "image", "capture", "--output", str(directory),
            "--root", str(root), "--desc", f"{drive}={desc}", "--name", "lab-golden"]
    for r in raw:
        argv += ["--raw", r]
    for x in excludes:
        argv += ["--exclude", x]
    if key_file is not None:
        argv += ["--key-file", str(key_file)]
    if compress:
        argv += ["--compress", compress]
    t0 = time.monotonic()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=900, check=False)
    seconds = time.monotonic() - t0
    if done.returncode != 0:
        raise KaError(f"ka image capture failed with status {done.returncode}: "
                      f"{done.stderr.strip()[-2000:]}")
    manifest = read_manifest(directory, None, authenticate=False)
    keep = workdir / "golden-reference"
    shutil.copytree(root / "etc/ssh", keep / "etc/ssh", symlinks=True)
    esp_copy = workdir / "golden-esp.img"
    shutil.copyfile(reference.esp_device, esp_copy)
    return CapturedGolden(
        directory, seconds, manifest.stored_bytes, manifest.raw_bytes,
        dataclasses.replace(reference, root=keep, esp_device=str(esp_copy)))


def read_serve_record(logs: Path) -> dict[str, Any] | None:
    """The golden's serve.json (which node was installed in which wave), if it wrote one."""
    try:
        value = json.loads((logs / "serve.json").read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


@dataclass
class ServeScript:
    """What happens to the nodes of a `--serve` lab run while it goes on: a node that starts
    only once node1 extracts (it arrives after the first wave's filesystem session started),
    a killed node started again, the golden node sent SIGTERM."""

    late: int | None
    restart: int | None
    term_golden: bool
    argv: dict[str, list[str]]
    step: Callable[[str], None]
    done: set[str] = field(default_factory=set)

    def tick(self, procs: LabProcesses) -> None:
        from ka.lab.clone import _extracting

        first = procs.procs.get("node1")
        extracting = first is not None and first.popen.poll() is None and _extracting(
            first.popen.pid)
        late = f"node{self.late}" if self.late else None
        if late and late not in self.done and extracting:
            self.done.add(late)
            self.step(f"{late} arrives now, after the first wave's filesystem session started")
            procs.start(late, self.argv[late], procs.procs["golden"].log.parent / f"{late}.log")
        again = f"node{self.restart}" if self.restart else None
        if again and again not in self.done and again in procs.procs:
            proc = procs.procs[again].popen
            if proc.poll() is not None and proc.returncode == -signal.SIGKILL:
                self.done.add(again)
                log = procs.procs[again].log
                log.rename(log.with_suffix(".killed.log"))
                self.step(f"{again} was killed during its install; it starts again")
                procs.start(again, self.argv[again], log)
        if self.term_golden and "golden" not in self.done and extracting:
            self.done.add("golden")
            self.step("SIGTERM to the golden node (ka clone --serve) mid-run")
            os.killpg(procs.procs["golden"].popen.pid, signal.SIGTERM)
