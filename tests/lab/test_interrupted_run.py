"""A test run stopped by SIGTERM in the middle of a lab leaves nothing behind: its network
namespaces, its loop device and the processes it started are gone once pytest has exited."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.slow]

VICTIM = '''
import time, contextlib
from pathlib import Path
from ka.lab.disks import attached_image
from ka.lab.network import LabNetwork
from ka.lab.clone import LabProcesses

def test_a_lab_that_is_stopped(tmp_path):
    out = Path({out!r})
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(LabNetwork(2, name={name!r}))
        image = stack.enter_context(attached_image(out / "disk.img", 64 * 1024 * 1024))
        procs = LabProcesses(stack)
        procs.start("sleeper", lab.argv(1, ["sleep", "300"]), out / "sleeper.log")
        (out / "state").write_text(f"{{image.device}} {{procs.procs['sleeper'].popen.pid}}")
        time.sleep(120)
'''


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                          check=True).stdout


def test_sigterm_during_a_lab_test_removes_what_it_made(tmp_path: Path) -> None:
    from ka.lab.network import unique_name

    name = unique_name()
    (tmp_path / "test_victim.py").write_text(VICTIM.format(out=str(tmp_path), name=name))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "sigterm", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path / "test_victim.py")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (tmp_path / "state").exists():
            assert run.poll() is None, run.communicate()[0]
            time.sleep(0.1)
        _device, pid = (tmp_path / "state").read_text().split()
        assert name in _namespaces()
        run.send_signal(signal.SIGTERM)
        said, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode != 0, said  # an interrupted run never passes
    assert "KeyboardInterrupt" in said
    assert name not in _namespaces(), said
    attached = subprocess.run(["losetup", "-j", str(tmp_path / "disk.img")],
                              capture_output=True, text=True).stdout
    assert attached == "", attached
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(
        f"/proc/{pid}/status").read_text().lower()
    assert not (tmp_path / "disk.img").exists()
