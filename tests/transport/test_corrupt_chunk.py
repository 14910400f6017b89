"""A chunk that does not decompress, seen by a real `ka receive` (an open session: no key,
so no chunk MAC stands before the decompressor; the transport frame itself is intact)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import blake3
import pytest
import zstandard
from transport_cluster import free_port

from ka.transport import CompressedSource, Event, SendOptions, send

pytestmark = pytest.mark.slow


class _Corrupt(CompressedSource):
    """Three chunks compressed ahead of time; the second one's zstd data is garbled past its
    frame header, so it is well framed for the transport and fails only in the decompressor."""

    def __init__(self, raw: list[bytes]) -> None:
        cctx = zstandard.ZstdCompressor(level=3)
        self.frames = [(cctx.compress(c), len(c)) for c in raw]
        bad = bytearray(self.frames[1][0])
        bad[12:] = bytes(b ^ 0x5A for b in bad[12:])
        self.frames[1] = (bytes(bad), self.frames[1][1])
        self.digest = blake3.blake3(b"".join(raw)).digest()
        self.description = "corrupt chunks"
        self.taken = 0

    def next_chunk(self) -> tuple[bytes, int] | None:
        if self.taken == len(self.frames):
            return None
        self.taken += 1
        return self.frames[self.taken - 1]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_chunk_that_does_not_decompress_ends_the_node_and_its_consumer(
        tmp_path: Path) -> None:
    raw = [os.urandom(200_000), os.urandom(200_000), os.urandom(200_000)]
    zstandard.ZstdDecompressor().decompress(_Corrupt(raw).frames[0][0], max_output_size=200_000)
    with pytest.raises(zstandard.ZstdError):
        zstandard.ZstdDecompressor().decompress(_Corrupt(raw).frames[1][0],
                                                max_output_size=200_000)
    port = free_port()
    listening = threading.Event()
    outcome: dict[str, Any] = {}

    def on_event(ev: Event) -> None:
        if ev.kind == "listening":
            listening.set()

    def sender() -> None:
        try:
            outcome["report"] = send(_Corrupt(raw), SendOptions(port=port, bind="127.0.0.1",
                                                                nodes=1), on_event)
        except Exception as e:  # noqa: BLE001 - handed back to the test
            outcome["error"] = e
        finally:
            listening.set()

    thread = threading.Thread(target=sender)
    thread.start()
    out, pidfile = tmp_path / "out", tmp_path / "consumer.pid"
    env = {k: v for k, v in os.environ.items() if k not in ("KA_KEY_FILE", "KA_GOLDEN_KEY")}
    proc = None
    try:
        assert listening.wait(10)
        proc = subprocess.run(
            [sys.executable, "-m", "ka", "receive", "--host", "127.0.0.1", "--port", str(port),
             "--find-timeout", "10", "--name", "node1",
             "--command", f"echo $$ > {pidfile}; exec cat > {out}"],
            capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=60)
    finally:
        thread.join(30)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    # The documented status of a copy that differs from what was sent, with its reason.
    assert proc.returncode == 12, proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("ka: error:")]
    assert error and "chunk at offset" in error[0] and "does not decompress" in error[0], \
        proc.stderr
    report = outcome["report"]
    assert not report.ok
    (node,) = report.nodes
    assert node.state == "failed" and not node.digest_ok
    # The consumer was ended, and took the good first chunk and nothing after the bad one.
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), f"consumer {pid} still runs"
    assert out.read_bytes() == raw[0][: len(out.read_bytes())]
    assert len(out.read_bytes()) <= len(raw[0])
    # Nothing of the session is left: no ka process of this test, no socket on its port.
    ss = subprocess.run(["ss", "-Htanu", f"( sport = :{port} )"], capture_output=True,
                        text=True)
    assert not [line for line in ss.stdout.splitlines() if "LISTEN" in line or "UNCONN" in line]
