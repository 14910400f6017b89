"""A node's consumer side without network: frames in its ring, a sink, the digest it proves."""

from __future__ import annotations

import blake3

from ka.transport.endpoints import BytesSink
from ka.transport.frame import DATA, END, EndOfStream, encode_frame, session_key, subkey
from ka.transport.node import ConsumerWriter
from ka.transport.relay import SharedRing

CHUNK = subkey(session_key(b"k"), b"chunk")


def feed(chunks: list[bytes], end: EndOfStream | None = None) -> tuple[ConsumerWriter, BytesSink]:
    """A ring holding `chunks` and an end frame (by default the true one), drained by a writer."""
    ring = SharedRing(1024 * 1024)
    sink = BytesSink()
    writer = ConsumerWriter(ring, sink, lambda: None, lambda reason: None)
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
