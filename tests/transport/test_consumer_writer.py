"""A node's consumer side without network: frames in its ring, a sink, the digest it proves."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import blake3

from ka.transport.endpoints import BytesSink, CommandSink
from ka.transport.frame import DATA, END, EndOfStream, encode_frame, session_key, subkey
from ka.transport.node import ConsumerWriter
from ka.transport.relay import SharedRing

CHUNK = subkey(session_key(b"k" * 32), b"chunk")


def feed(chunks: list[bytes], end: EndOfStream | None = None,
         session_id: bytes | None = None) -> tuple[ConsumerWriter, BytesSink]:
    """A ring holding `chunks` and an end frame (by default the true one), drained by a writer."""
    ring = SharedRing(1024 * 1024)
    sink = BytesSink()
    writer = ConsumerWriter(ring, sink, lambda: None, lambda reason: None,
                            session_id=session_id)
    writer.start()
    offset = 0
    for chunk in chunks:
        frame = encode_frame(CHUNK, DATA, chunk, offset=offset)
        ring.put(frame)
        offset += len(frame)
    data = b"".join(chunks)
    end = end or EndOfStream(len(data), offset, blake3.blake3(data).digest())
    ring.put(encode_frame(CHUNK, END, end.encode(), offset=offset), last=True)
    assert writer.done.wait(10)
    return writer, sink


def test_the_whole_stream_is_consumed_and_proven() -> None:
    writer, sink = feed([b"alpha " * 1000, b"beta " * 999])
    assert sink.data == b"alpha " * 1000 + b"beta " * 999
    assert writer.mismatch is None and writer.failure is None and writer.status == 0
    assert writer.digest == blake3.blake3(sink.data).hexdigest()
    assert writer.raw == len(sink.data)


def test_a_stream_whose_digest_differs_from_the_senders_is_a_mismatch() -> None:
    writer, _ = feed([b"alpha", b"beta"], EndOfStream(9, 0, blake3.blake3(b"other").digest()))
    assert writer.mismatch is not None and "digest mismatch" in writer.mismatch


def test_a_stream_shorter_than_the_senders_is_a_mismatch() -> None:
    data = b"alpha" + b"beta" + b"gamma"
    writer, _ = feed([b"alpha", b"beta"], EndOfStream(len(data), 0, blake3.blake3(data).digest()))
    assert writer.mismatch is not None and "got 9 bytes" in writer.mismatch


def test_the_end_of_another_sessions_stream_is_a_mismatch() -> None:
    # A stream recorded in an older session (same key, encryption off) replayed to a node:
    # its end frame names that session, not the one the node joined.
    data = b"alpha" + b"beta"
    old = EndOfStream(len(data), 0, blake3.blake3(data).digest(), b"o" * 16)
    writer, _ = feed([b"alpha", b"beta"], old, session_id=b"n" * 16)
    assert writer.mismatch == "the end of the stream names another session"
    writer, _ = feed([b"alpha", b"beta"], dataclasses.replace(old, session=b"n" * 16),
                     session_id=b"n" * 16)
    assert writer.mismatch is None


def test_interrupt_ends_a_consumer_pipeline_that_takes_nothing(tmp_path: Path) -> None:
    # The node's last resort for a stuck consumer: every process of the pipeline ends, not
    # only the shell (the rest would keep the pipe, and the target, open).
    pids = tmp_path / "pids"
    ring = SharedRing(16 * 1024 * 1024)
    writer = ConsumerWriter(ring, CommandSink(f"(echo $$ >>{pids}; exec sleep 600) | "
                                              f"(sh -c 'echo $$ >>{pids}; exec sleep 600')"),
                            lambda: None, lambda reason: None)
    writer.start()
    chunk, offset = bytes(1024 * 1024), 0
    for _ in range(8):  # more than the pipe holds
        frame = encode_frame(CHUNK, DATA, chunk, offset=offset)
        ring.put(frame)
        offset += len(frame)
    deadline = time.monotonic() + 10
    while len(pids.read_text().split() if pids.exists() else []) < 2:
        assert time.monotonic() < deadline, "the consumer pipeline never started"
        time.sleep(0.05)
    ring.close()  # as the node does when its session ends: the writer is still blocked
    assert not writer.done.wait(0.5)

    writer.interrupt()
    assert writer.done.wait(10), "interrupt() left the write blocked"
    assert writer.failure is not None and "stopped reading" in writer.failure
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
            assert time.monotonic() < deadline, f"process {pid} of the pipeline outlived it"
            time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return "X"
