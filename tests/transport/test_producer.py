"""The sender's producer, without network: framing, compression and encryption of chunks."""

from __future__ import annotations

import blake3
import pytest

from ka.transport.endpoints import BytesSource, CommandSource
from ka.transport.frame import (
    END,
    FLAG_SEALED,
    FLAG_ZSTD,
    EndOfStream,
    frame_payload,
    seal_key,
    session_key,
    subkey,
    verify_frame,
)
from ka.transport.producer import Producer, compression_level
from ka.transport.relay import SharedRing

ROOT = session_key(b"k")
CHUNK = subkey(ROOT, b"chunk")


def produce(data: bytes, level: int | None = None, sealed: bool = False) -> list[bytes]:
    ring = SharedRing(64 * 1024 * 1024)
    key = seal_key(ROOT, b"s" * 16) if sealed else None
    producer = Producer(BytesSource(data), ring, CHUNK, 4096, level, key)
    producer.start()
    assert producer.done.wait(10) and producer.error is None
    frames, pos = [], 0
    while True:
        frame = bytes(ring.get(pos, lambda: False))
        verify_frame(CHUNK, frame, pos)
        frames.append(frame)
        pos += len(frame)
        if frame[2] == END:
            return frames


def test_frames_carry_the_stream_and_its_digest() -> None:
    data = bytes(range(256)) * 100
    frames = produce(data)
    assert b"".join(bytes(frame_payload(f)) for f in frames[:-1]) == data
    eos = EndOfStream.decode(frame_payload(frames[-1]))
    assert eos.raw_total == len(data) and eos.digest == blake3.blake3(data).digest()


def test_sealed_frames_do_not_show_the_plaintext() -> None:
    data = b"SECRET-PASSWORD-LINE\n" * 2000
    frames = produce(data, level=3, sealed=True)
    wire = b"".join(frames)
    assert b"SECRET-PASSWORD" not in wire
    assert all(f[3] & FLAG_SEALED for f in frames[:-1])
    assert any(f[3] & FLAG_ZSTD for f in frames[:-1])


def test_compression_levels() -> None:
    assert compression_level(None) is None
    assert compression_level("zstd") == 3
    assert compression_level("zstd:9") == 9
    for bad in ("gzip", "zstd:x", "zstd:0", "zstd:30"):
        with pytest.raises(Exception, match="zstd|compression"):
            compression_level(bad)


def test_failing_command_is_an_error_without_end_of_stream() -> None:
    ring = SharedRing(1024 * 1024)
    producer = Producer(CommandSource("printf abc; exit 7"), ring, CHUNK, 4096, None)
    producer.start()
    assert producer.done.wait(10)
    assert producer.error is not None and "status 7" in str(producer.error)
    assert not ring.ended


def test_chunks_are_sized_for_the_depth_and_the_length() -> None:
    """No --chunk-size: a short stream to a long chain is cut small, one hop gets the big
    chunks, and a command's output of unknown length starts small."""
    from ka.transport.chunking import AUTO_MIN
    from ka.transport.options import CHUNK_SIZE

    def sizes(source: BytesSource | CommandSource, hops: int) -> list[int]:
        ring = SharedRing(64 * 1024 * 1024)
        producer = Producer(source, ring, CHUNK, None, None)
        producer.start(hops)
        assert producer.done.wait(10) and producer.error is None
        out, pos = [], 0
        while (frame := bytes(ring.get(pos, lambda: False)))[2] != END:
            out.append(len(frame_payload(frame)))
            pos += len(frame)
        return out

    data = bytes(2 * 1024 * 1024)
    assert set(sizes(BytesSource(data), 32)[:-1]) == {AUTO_MIN}
    assert set(sizes(BytesSource(data), 1)) == {CHUNK_SIZE}
    assert sizes(CommandSource("head -c 2097152 /dev/zero"), 32)[0] == AUTO_MIN
