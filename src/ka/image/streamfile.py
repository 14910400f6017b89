"""An image's stream file: the stream cut in chunks, each compressed once, as zstd's seekable
format (contrib/seekable_format in the zstd sources).

The file is a sequence of independent zstd frames, one per transport chunk, followed by a
seek table in a skippable frame that gives every frame's compressed and decompressed size.
Any zstd decompresses it (`zstd -dc fs-1.tar.zst | tar -t`: decoders skip the table); ka
reads the table to hand the frames to the transport as they are, so a deploy never
compresses, and the sender never decompresses, anything.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import blake3
import zstandard

SKIPPABLE_MAGIC = 0x184D2A5E
SEEKABLE_MAGIC = 0x8F92EAB1
_ENTRY = struct.Struct("<II")  # compressed size, decompressed size
_FOOTER = struct.Struct("<IBI")  # number of frames, descriptor, seekable magic
_SKIP_HEADER = struct.Struct("<II")  # skippable magic, frame size


class StreamFileError(Exception):
    """A stream file that is not what its seek table says (truncated, changed, not one)."""


@dataclass(frozen=True)
class WrittenStream:
    raw_bytes: int
    stored_bytes: int
    digest: str  # BLAKE3 of the decompressed stream, hex
    stored_digest: str  # BLAKE3 of the file as stored, hex
    chunks: int


class StreamFileWriter:
    """Compresses chunk after chunk into `out`; `finish` writes the seek table."""

    def __init__(self, out: BinaryIO, level: int) -> None:
        self._out = out
        self._cctx = zstandard.ZstdCompressor(level=level, write_content_size=True)
        self._frames: list[tuple[int, int]] = []
        self._raw = blake3.blake3()
        self._stored = blake3.blake3()
        self.raw_bytes = 0
        self.stored_bytes = 0

    def write_chunk(self, chunk: memoryview | bytes) -> None:
        packed = self._cctx.compress(chunk)
        self._raw.update(chunk)
        self._put(packed)
        self._frames.append((len(packed), len(chunk)))
        self.raw_bytes += len(chunk)

    def _put(self, data: bytes) -> None:
        self._out.write(data)
        self._stored.update(data)
        self.stored_bytes += len(data)

    def finish(self) -> WrittenStream:
        entries = b"".join(_ENTRY.pack(c, d) for c, d in self._frames)
        footer = _FOOTER.pack(len(self._frames), 0, SEEKABLE_MAGIC)
        self._put(_SKIP_HEADER.pack(SKIPPABLE_MAGIC, len(entries) + len(footer)) + entries
                  + footer)
        return WrittenStream(self.raw_bytes, self.stored_bytes, self._raw.hexdigest(),
                             self._stored.hexdigest(), len(self._frames))


def seek_table(f: BinaryIO) -> list[tuple[int, int]]:
    """The (compressed, decompressed) size of every frame, checked against the file's size."""
    size = f.seek(0, os.SEEK_END)
    if size < _SKIP_HEADER.size + _FOOTER.size:
        raise StreamFileError(f"{size} bytes: too short for a seek table (truncated?)")
    f.seek(size - _FOOTER.size)
    count, descriptor, magic = _FOOTER.unpack(f.read(_FOOTER.size))
    if magic != SEEKABLE_MAGIC:
        raise StreamFileError("no seek table at its end (truncated or not a ka stream file)")
    entry_size = _ENTRY.size + (4 if descriptor & 0x80 else 0)
    table = _SKIP_HEADER.size + count * entry_size + _FOOTER.size
    if table > size:
        raise StreamFileError("its seek table is longer than the file (truncated?)")
    f.seek(size - table)
    skip_magic, frame_size = _SKIP_HEADER.unpack(f.read(_SKIP_HEADER.size))
    if skip_magic != SKIPPABLE_MAGIC or frame_size != table - _SKIP_HEADER.size:
        raise StreamFileError("its seek table is damaged")
    body = f.read(count * entry_size)
    frames = [_ENTRY.unpack_from(body, i * entry_size) for i in range(count)]
    if sum(c for c, _d in frames) != size - table:
        raise StreamFileError(f"its frames add up to {sum(c for c, _d in frames)} bytes, "
                              f"the file holds {size - table} (truncated or changed)")
    return frames


def iter_frames(f: BinaryIO) -> Iterator[tuple[bytes, int]]:
    """Every frame as stored, with its decompressed length, in order."""
    frames = seek_table(f)
    f.seek(0)
    for compressed, decompressed in frames:
        data = f.read(compressed)
        if len(data) != compressed:
            raise StreamFileError("the file ended inside a frame")
        yield data, decompressed


def file_digest(path: str | os.PathLike[str]) -> str:
    """BLAKE3 of a whole file, hex (what `stored_digest` records)."""
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    if os.path.getsize(path):  # an empty file cannot be mapped
        h.update_mmap(path)
    return h.hexdigest()


def raw_digest(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(bytes, BLAKE3) of the decompressed stream, every frame decompressed and checked."""
    h = blake3.blake3()
    dctx = zstandard.ZstdDecompressor()
    total = 0
    with open(path, "rb") as f:
        for data, decompressed in iter_frames(f):
            try:
                raw = dctx.decompress(data, max_output_size=decompressed)
            except zstandard.ZstdError as e:
                raise StreamFileError(f"the frame at byte {total} does not decompress: {e}"
                                      ) from e
            if len(raw) != decompressed:
                raise StreamFileError(f"the frame at byte {total} decompressed to "
                                      f"{len(raw)} bytes, its seek table says {decompressed}")
            h.update(raw)
            total += decompressed
    return total, h.hexdigest()
