"""`ka lab clone --image`: the golden disk is captured into an image, then detached and
deleted, and the nodes are installed from the image alone.

What the verification needs of the golden outlives it: the tree digest (taken before), the
golden's SSH host keys (the clones must not have them) and a copy of its ESP.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ka.errors import KaError
from ka.lab.verdict import GoldenReference


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
    manifest = json.loads((directory / "manifest.json").read_text())
    keep = workdir / "golden-reference"
    shutil.copytree(root / "etc/ssh", keep / "etc/ssh", symlinks=True)
    esp_copy = workdir / "golden-esp.img"
    shutil.copyfile(reference.esp_device, esp_copy)
    return CapturedGolden(
        directory, seconds, sum(s["stored_bytes"] for s in manifest["streams"]),
        sum(s["raw_bytes"] for s in manifest["streams"]),
        dataclasses.replace(reference, root=keep, esp_device=str(esp_copy)))
