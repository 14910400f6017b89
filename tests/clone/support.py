"""What the clone tests that run real processes share: `ka` processes on 127.0.0.1 ended
whole at the end, and a clone tree whose boot tools (busybox scripts) record their calls."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

BUSYBOX = shutil.which("busybox")
RECORDER = """#!/bin/sh
# Record the call, and what the chroot offers, for the test to read.
{{ echo "$0 $*"; test -e /proc/self/status && echo proc; test -c /dev/null && echo dev;
   test -d /sys/kernel && echo sys; }} >> /calls.log
{body}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_ka(argv: list[str], log: Path, procs: list[subprocess.Popen[bytes]],
             cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """`python -m ka ARGV` in a process group of its own, its output in `log`; kept in
    `procs` for `end_all`."""
    with open(log, "wb") as out:
        p = subprocess.Popen([sys.executable, "-m", "ka", *argv], stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)
    procs.append(p)
    return p


def wait_all(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """Wait for each process up to `timeout` seconds; one still running is left to `end_all`
    (its return code stays None, which no test takes for a success)."""
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


def end_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def recording_tools(root: Path, tools: Mapping[str, str]) -> Path:
    """Put busybox and a recording script for each of `tools` (name -> extra shell body) in
    usr/sbin of the tree `root`; each call is appended to /calls.log inside the tree."""
    assert BUSYBOX
    for d in ("bin", "usr/sbin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, root / "bin/busybox")
    for tool in ("sh", "test", "echo", "cat"):
        os.symlink("busybox", root / "bin" / tool)
    for name, body in tools.items():
        path = root / "usr/sbin" / name
        path.write_text(RECORDER.format(body=body))
        path.chmod(0o755)
    return root
