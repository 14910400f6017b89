"""The sender's producer: read the source, compress once, frame, MAC, and store in the ring."""

from __future__ import annotations

import dataclasses
import threading
import time

import blake3
import zstandard

from ka.errors import KaError, UsageError
from ka.transport import identity
from ka.transport.chunking import ChunkSizer
from ka.transport.endpoints import CompressedSource, Source
from ka.transport.errors import TransportError
from ka.transport.frame import (
    DATA,
    END,
    FLAG_ZSTD,
    EndOfStream,
    Sealer,
    encode_frame,
)
from ka.transport.relay import RingClosed, SharedRing


def compression_level(spec: str | None) -> int | None:
    """None for no compression, else the zstd level of "zstd" / "zstd:LEVEL"."""
    if spec is None:
        return None
    name, _, level = spec.partition(":")
    if name != "zstd":
        raise UsageError(f"unknown compression {spec!r}", hint="use zstd or zstd:LEVEL")
    try:
        value = int(level) if level else 3
    except ValueError as e:
        raise UsageError(f"bad zstd level in {spec!r}", hint="use zstd or zstd:LEVEL") from e
    if not 1 <= value <= 19:
        raise UsageError(f"zstd level {value} out of range 1..19")
    return value


class Producer:
    def __init__(self, source: Source, ring: SharedRing, chunk_key: bytes,
                 chunk_size: int | None, level: int | None, seal_key: bytes | None = None,
                 session_id: bytes = bytes(16), identity: bytes | None = None) -> None:
        self._identity = identity  # the golden's Ed25519 private key: signs the end
        self._sealer = Sealer(seal_key) if seal_key is not None else None
        self._session_id = session_id
        self._source = source
        self._ring = ring
        self._key = chunk_key
        self._fixed = chunk_size  # --chunk-size; None: sized by ChunkSizer
        self._hops = 1
        self._level = level
        self.raw = 0
        self.digest = ""
        self.error: KaError | None = None
        self.started_at = 0.0
        self.eof_at: float | None = None
        self.cancelled = False
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def start(self, hops: int = 1) -> None:
        self._hops = hops
        self.started_at = time.monotonic()
        self._thread.start()

    def abort(self) -> None:
        """Stop producing on purpose (no node left, or the session failed)."""
        self.cancelled = True
        self._source.abort()

    def _run(self) -> None:
        error: KaError | None = None
        try:
            self._produce()
        except RingClosed:
            self._source.abort()
        except KaError as e:
            error = e
            self._source.abort()
        except OSError as e:
            error = TransportError(f"reading {self._source.description} failed: {e}")
            self._source.abort()
        finally:
            if not self.cancelled:  # a producer killed by us has not failed by itself
                self.error = error
            self.done.set()

    def _produce(self) -> None:
        self._source.open()
        if isinstance(self._source, CompressedSource):
            self._produce_stored(self._source)
            return
        sizer = ChunkSizer(self._hops, self._source.length(), self._fixed)
        buf = bytearray(sizer.largest)
        view = memoryview(buf)
        digest = blake3.blake3()
        cctx = zstandard.ZstdCompressor(level=self._level) if self._level else None
        offset = 0
        while True:
            n = self._source.read_into(view[: sizer.next(self.raw)])
            if n == 0:
                break
            chunk = view[:n]
            digest.update(chunk)
            self.raw += n
            payload: bytes | memoryview = chunk
            flags = 0
            if cctx is not None:
                packed = cctx.compress(chunk)
                if len(packed) < n:
                    payload, flags = packed, FLAG_ZSTD
            frame = encode_frame(self._key, DATA, payload, offset=offset, raw_length=n, flags=flags,
                                 sealed_with=self._sealer)
            self._ring.put(frame)
            offset += len(frame)
        self._source.close()  # raises if the producer command failed: no END then
        self._end(offset, digest.digest())

    def _produce_stored(self, source: CompressedSource) -> None:
        """Frame chunks compressed ahead of time as they are (see CompressedSource)."""
        offset = 0
        while (chunk := source.next_chunk()) is not None:
            payload, raw_length = chunk
            self.raw += raw_length
            frame = encode_frame(self._key, DATA, payload, offset=offset, raw_length=raw_length,
                                 flags=FLAG_ZSTD, sealed_with=self._sealer)
            self._ring.put(frame)
            offset += len(frame)
        source.close()
        self._end(offset, source.digest)

    def _end(self, offset: int, digest: bytes) -> None:
        self.digest = digest.hex()
        eos = EndOfStream(self.raw, offset, digest, self._session_id)
        if self._identity is not None:
            eos = dataclasses.replace(eos, signature=identity.sign(self._identity, eos.signed))
        self._ring.put(encode_frame(self._key, END, eos.encode(), offset=offset,
                                    raw_length=0), last=True)
        self.eof_at = time.monotonic()
