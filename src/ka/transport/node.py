"""A node's two data-plane workers: the upstream link and the consumer writer.

Upstream pulls verified frames from the parent the sender assigned and stores them in the
ring; when told to move (the parent died), it reconnects to the new parent and resumes at
exactly `ring.end`. ConsumerWriter takes frames from the ring, decompresses, hashes the
whole stream and feeds the sink; if the consumer breaks, it keeps draining so the node goes
on relaying for its sons and reports the failure at the end.
"""

from __future__ import annotations

import hmac
import importlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import blake3

from ka.errors import KaError
from ka.transport import auth, identity
from ka.transport.channel import KeyMismatch, WholeReader, initiate, shut
from ka.transport.endpoints import Sink, SinkBroken
from ka.transport.errors import ProtocolError
from ka.transport.frame import (
    END,
    FLAG_SEALED,
    FLAG_ZSTD,
    PREFIX,
    EndOfStream,
    Sealer,
    check_frame,
    frame_payload,
    parse_header,
)
from ka.transport.messages import Attach, Ok
from ka.transport.relay import ASSIGNMENT_WAIT, RingClosed, SharedRing, tune

CONNECT_TIMEOUT = 3.0
RETRY_PAUSE = 0.5

Note = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class ParentTarget:
    epoch: int
    id: str
    address: str
    port: int
    ticket: str = ""  # shown to the parent: the sender gave it to this node for this parent


class Upstream:
    def __init__(self, ring: SharedRing, root: bytes, chunk_key: bytes, node_id: str, note: Note):
        self._ring = ring
        self._root = root
        self._chunk_key = chunk_key
        self._id = node_id
        self._note = note
        self._cond = threading.Condition()
        self._target: ParentTarget | None = None
        self._sock: socket.socket | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="upstream", daemon=True)
        self._thread.start()

    def retarget(self, target: ParentTarget) -> None:
        with self._cond:
            self._target = target
            sock, self._sock = self._sock, None
            self._cond.notify_all()
        if sock is not None:
            shut(sock)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            sock, self._sock = self._sock, None
            self._cond.notify_all()
        if sock is not None:
            shut(sock)

    def _run(self) -> None:
        failed_epoch = -1
        while not self._ring.ended:
            with self._cond:
                deadline = time.monotonic() + RETRY_PAUSE
                while not self._stopped and (
                    self._target is None
                    or (self._target.epoch == failed_epoch and time.monotonic() < deadline)
                ):
                    self._cond.wait(0.1)
                if self._stopped:
                    return
                target = self._target
            assert target is not None
            try:
                self._stream(target)
            except RingClosed:
                return
            except (OSError, ProtocolError) as e:
                if self._ring.ended or self._stopped:
                    return
                failed_epoch = target.epoch
                if self._target is target:
                    bad_key = isinstance(e, KeyMismatch)
                    self._note("lost", {"parent": target.id, "offset": self._ring.end,
                                        "reason": str(e) or type(e).__name__, "bad_key": bad_key})

    def _stream(self, target: ParentTarget) -> None:
        sock = socket.create_connection((target.address, target.port), timeout=CONNECT_TIMEOUT)
        with self._cond:
            # Registered at once, so a retarget can cut a handshake with a stopped parent.
            if self._target is not target or self._stopped:
                sock.close()
                return
            self._sock = sock
        try:
            tune(sock)
            chan = initiate(sock, self._root, auth.DATA)
            offset = self._ring.end
            chan.send(Attach(self._id, offset, target.ticket))
            sock.settimeout(ASSIGNMENT_WAIT + CONNECT_TIMEOUT)
            reply = chan.recv()
            if not isinstance(reply, Ok):
                raise ProtocolError(f"parent refused: {getattr(reply, 'reason', reply.kind)}")
            sock.settimeout(None)
            self._note("attached", {"parent": target.id, "offset": offset})
            self._pull(sock)
        finally:
            with self._cond:
                if self._sock is sock:
                    self._sock = None
            sock.close()

    def _pull(self, sock: socket.socket) -> None:
        ring, key = self._ring, self._chunk_key
        reader = WholeReader(sock)
        prefix = memoryview(bytearray(PREFIX))
        while True:
            reader.fill(prefix)
            header = parse_header(prefix)
            frame = bytearray(header.size)
            frame[:PREFIX] = prefix
            reader.fill(memoryview(frame)[PREFIX:])
            check_frame(key, header, frame, ring.end)
            ring.put(frame, last=header.kind == END)
            if header.kind == END:
                return


class ConsumerWriter:
    """Feeds the sink from the ring; its cursor is the node's acknowledged position."""

    def __init__(self, ring: SharedRing, sink: Sink, on_progress: Callable[[], None],
                 on_failing: Callable[[str], None], seal_key: bytes | None = None,
                 session_id: bytes | None = None, golden_key: bytes | None = None) -> None:
        self._ring = ring
        self._session_id = session_id  # when given, END must name this session
        self._golden_key = golden_key  # when given, END must be signed by it
        self._sealer = Sealer(seal_key) if seal_key is not None else None
        self._clear = bytearray()  # decrypted payloads, reused: the sink is done with each
        self._sink = sink
        self._on_progress = on_progress
        self._on_failing = on_failing
        self.consumed = 0
        self.raw = 0
        self.digest = ""
        self.failure: str | None = None
        self.mismatch: str | None = None
        self.status: int | None = None
        self.reason: str | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.done = threading.Event()
        ring.add_cursor(self, 0)
        self._thread = threading.Thread(target=self._run, name="consumer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def interrupt(self) -> None:
        """End a consumer that does not finish, even while a write to it is blocked."""
        self._sink.interrupt()

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            self._on_failing(reason)

    def _run(self) -> None:
        completed = started = False
        try:
            try:
                self._sink.open()
                started = True
            except (OSError, KaError) as e:
                self._fail(f"cannot start the consumer: {e}")
            completed = self._drain()
        except RingClosed:
            pass
        finally:
            if completed and self.failure is None:
                self.status, self.reason = self._sink.close()
            else:
                self.status, self.reason = self._sink.abort()
                if not started:  # no consumer ever ran: it has no exit status to report
                    self.status = None
                if self.failure is None:  # an aborted sink may still say status 0
                    self.failure = "the consumer stopped before the end of the stream"
            self.finished_at = time.monotonic()
            self.done.set()

    def _unseal(self, payload: memoryview) -> memoryview:
        assert self._sealer is not None  # every sealed frame, in order (see Sealer)
        if len(self._clear) < len(payload):
            self._clear = bytearray(len(payload))
        out = memoryview(self._clear)[: len(payload)]
        self._sealer.apply_into(payload, out)
        return out

    def _drain(self) -> bool:
        ring = self._ring
        digest = blake3.blake3()
        zstd: Any = None  # zstandard and its decompressor, at the first compressed chunk:
        dctx: Any = None  # most streams have none
        pos = 0
        while True:
            frame = ring.get(pos, lambda: False)
            if self.started_at is None:
                self.started_at = time.monotonic()
            header = parse_header(memoryview(frame)[:PREFIX])
            payload = frame_payload(frame)
            if header.kind == END:
                eos = EndOfStream.decode(payload)
                self.digest = digest.hexdigest()
                if self.mismatch is not None:
                    pass  # the first reason stands: a chunk that could not be decoded
                elif self._session_id is not None and not hmac.compare_digest(
                        eos.session, self._session_id):
                    self.mismatch = "the end of the stream names another session"
                elif self._golden_key is not None and not identity.verify(
                        self._golden_key, eos.signed, eos.signature):
                    self.mismatch = ("the stream is not signed by the pinned golden identity "
                                     "(--golden-key): its sender is not the golden node")
                elif eos.raw_total != self.raw or eos.digest != digest.digest():
                    self.mismatch = (f"stream digest mismatch: got {self.raw} bytes "
                                     f"{self.digest[:16]}…, sender had {eos.raw_total} bytes "
                                     f"{eos.digest.hex()[:16]}…")
            else:
                data: Any = payload
                if header.flags & FLAG_SEALED:
                    if self._sealer is None:
                        self.mismatch = "the stream is encrypted but no key was given"
                        data = b""
                    else:
                        data = self._unseal(payload)
                if header.flags & FLAG_ZSTD and self.mismatch is None:
                    if zstd is None:  # imported once, at the first compressed chunk
                        zstd = importlib.import_module("zstandard")
                        dctx = zstd.ZstdDecompressor()
                    try:
                        data = dctx.decompress(data, max_output_size=header.raw_length)
                    except zstd.ZstdError as e:
                        self.mismatch = f"chunk at offset {pos} does not decompress: {e}"
                        data = b""
                if len(data) != header.raw_length and self.mismatch is None:
                    self.mismatch = f"chunk at offset {pos} decoded to the wrong length"
                if self.mismatch is not None:
                    # Nothing after a chunk that cannot be decoded reaches the consumer: it
                    # is ended (aborted, not closed) rather than fed a stream with a hole.
                    self._fail(self.mismatch)
                digest.update(data)
                self.raw += len(data)
                if self.failure is None:
                    try:
                        self._sink.write(memoryview(data))
                    except SinkBroken as e:
                        self._fail(f"{e} after {self.raw - len(data)} bytes")
            pos += len(frame)
            ring.move(self, pos)
            self.consumed = pos
            self._on_progress()
            if header.kind == END:
                return True
