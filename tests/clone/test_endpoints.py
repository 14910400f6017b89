"""The tar extraction a node feeds: ended with everything it started when its target is stuck."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ka.clone.endpoints import TarSink
from ka.transport.endpoints import SinkBroken


def _archive(size: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("big")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    return out.getvalue()


def _ended(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")  # a zombie no longer runs


@pytest.fixture
def stuck_tar(tmp_path: Path) -> Iterator[tuple[TarSink, Path]]:
    """A tar whose target takes nothing: its --to-command (tar's own child) never reads."""
    pidfile = tmp_path / "target.pid"
    sink = TarSink(["tar", "--extract", "--file=-",
                    f"--to-command=echo $$ > {pidfile}; exec sleep 600"])
    sink.open()
    try:
        yield sink, pidfile
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        if sink._proc is not None:
            sink._proc.kill()
        sink.close()


def test_interrupt_ends_a_blocked_write_and_tar_with_its_children(
        stuck_tar: tuple[TarSink, Path]) -> None:
    sink, pidfile = stuck_tar
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            sink.write(memoryview(_archive(8 * 1024 * 1024)))
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            outcome.append(e)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "tar never started its --to-command"
        time.sleep(0.05)
    writer.join(1.0)
    assert writer.is_alive(), "the write should block: nothing reads the target"

    sink.interrupt()
    writer.join(10)
    assert not writer.is_alive(), "interrupt() left the write blocked on a stuck tar"
    assert isinstance(outcome[0], SinkBroken)
    status, reason = sink.close()
    assert status == 128 + signal.SIGKILL
    assert reason is not None and reason.startswith(f"tar --extract exited with status {status}")
    target = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not _ended(target):
        assert time.monotonic() < deadline, "tar's child outlived the interrupt"
        time.sleep(0.05)


def test_a_finished_extraction_reports_status_and_keeps_stderr(tmp_path: Path) -> None:
    sink = TarSink(["tar", "--extract", "--file=-", f"--directory={tmp_path}"])
    sink.open()
    sink.write(memoryview(_archive(3000)))
    assert sink.close() == (0, None)
    assert (tmp_path / "big").read_bytes() == bytes(3000)

    broken = TarSink(["tar", "--extract", "--file=-", f"--directory={tmp_path / 'none'}"])
    broken.open()
    with contextlib.suppress(SinkBroken):
        broken.write(memoryview(_archive(3000)))
    status, reason = broken.close()
    assert status == 2
    assert reason is not None and "tar --extract exited with status 2" in reason
    assert "Cannot" in broken.stderr or "No such file" in broken.stderr
