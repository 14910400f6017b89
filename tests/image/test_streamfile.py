"""The stream file: zstd's seekable format, one frame per transport chunk."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import blake3
import pytest

from ka.image.streamfile import (
    StreamFileError,
    StreamFileWriter,
    file_digest,
    iter_frames,
    raw_digest,
    seek_table,
)

CHUNKS = [os.urandom(70_000), bytes(262_144), b"abc" * 1000, b"z"]


def _write(path: Path, chunks: list[bytes]) -> None:
    with open(path, "wb") as f:
        w = StreamFileWriter(f, 3)
        for c in chunks:
            w.write_chunk(c)
        written = w.finish()
    assert written.raw_bytes == sum(map(len, chunks))
    assert written.stored_bytes == path.stat().st_size
    assert written.digest == blake3.blake3(b"".join(chunks)).hexdigest()
    assert written.stored_digest == file_digest(path)
    assert written.chunks == len(chunks)


def test_frames_come_back_as_written_with_their_sizes(tmp_path: Path) -> None:
    path = tmp_path / "s.zst"
    _write(path, CHUNKS)
    with open(path, "rb") as f:
        assert [d for _c, d in seek_table(f)] == [len(c) for c in CHUNKS]
        frames = list(iter_frames(f))
    import zstandard

    assert [zstandard.ZstdDecompressor().decompress(data) for data, _n in frames] == CHUNKS
    assert raw_digest(path) == (sum(map(len, CHUNKS)),
                                blake3.blake3(b"".join(CHUNKS)).hexdigest())


def test_the_zstd_tool_decompresses_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "s.zst"
    _write(path, CHUNKS)
    out = subprocess.run(["zstd", "-q", "-d", "-c", str(path)], capture_output=True, check=True)
    assert out.stdout == b"".join(CHUNKS)


def test_an_empty_stream_has_a_table_and_no_frame(tmp_path: Path) -> None:
    path = tmp_path / "s.zst"
    _write(path, [])
    assert raw_digest(path) == (0, blake3.blake3(b"").hexdigest())


@pytest.mark.parametrize("cut", [1, 9, 5000])
def test_a_truncated_file_is_refused(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "s.zst"
    _write(path, CHUNKS)
    data = path.read_bytes()
    with pytest.raises(StreamFileError):
        seek_table(io.BytesIO(data[:-cut]))
    with pytest.raises(StreamFileError):
        seek_table(io.BytesIO(data[cut:]))


def test_a_changed_frame_does_not_pass_the_deep_check(tmp_path: Path) -> None:
    path = tmp_path / "s.zst"
    _write(path, CHUNKS)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # inside the first (incompressible) frame: same sizes, other bytes
    path.write_bytes(data)
    with open(path, "rb") as f:
        seek_table(f)  # the sizes still add up
    total, digest = raw_digest(path)
    assert digest != blake3.blake3(b"".join(CHUNKS)).hexdigest()
