"""`send`: the root of a session. Rendezvous, plan the tree, produce, heal, release, report."""

from __future__ import annotations

import base64
import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ka.errors import UsageError
from ka.keys import check_key
from ka.transport import auth
from ka.transport.channel import Channel, KeyMismatch, respond, shut
from ka.transport.discovery import DiscoveryResponder
from ka.transport.endpoints import Source
from ka.transport.errors import ProtocolError, TransportError
from ka.transport.frame import PREFIX, chunk_key, seal_key, session_key
from ka.transport.gate import accept_loop
from ka.transport.health import Progress
from ka.transport.messages import Abort, EventKind, Join
from ka.transport.options import MAX_CHUNK, MIN_CHUNK, Event, SendOptions, SessionReport
from ka.transport.producer import Producer, compression_level
from ka.transport.relay import Relay, SharedRing, listen
from ka.transport.session import NodeRecord, Session

JOIN_TIMEOUT = 5.0
MAX_BATCH = 100_000  # inbox items handled per wake-up, so the clock still runs


@dataclass
class _Inbox:
    queue: queue.Queue[tuple[str, str | None, Any]]

    def put(self, kind: str, node: str | None, item: Any) -> None:
        self.queue.put((kind, node, item))


def validate(options: SendOptions) -> None:
    if options.nodes < 1:
        raise UsageError("--nodes must be at least 1")
    if options.arity < 1:
        raise UsageError("--arity must be at least 1")
    if options.min_nodes is not None and not 1 <= options.min_nodes <= options.nodes:
        raise UsageError("--min-nodes must be between 1 and --nodes")
    if options.chunk_size is not None and not MIN_CHUNK <= options.chunk_size <= MAX_CHUNK:
        raise UsageError(f"--chunk-size must be between {MIN_CHUNK // 1024} KiB and "
                         f"{MAX_CHUNK // 1024**2} MiB")
    if options.ring_size < 4 * (options.largest_chunk + PREFIX):
        raise UsageError(f"--ring-size must be at least {4 * (options.largest_chunk + PREFIX)} "
                         "bytes (four chunks)")
    if options.release_delay is not None and options.release_delay < 0:
        raise UsageError("--release-delay must not be negative")
    if options.wait_timeout is not None and options.wait_timeout < 0:
        raise UsageError("--wait-timeout must not be negative")
    if options.stall_timeout <= 0:
        raise UsageError("--stall-timeout must be positive")
    if not 0 < options.port < 65536:
        raise UsageError("--port must be between 1 and 65535")
    check_key(options.key)
    if options.identity is not None and len(options.identity) != 32:
        raise UsageError("the golden identity must be a 32-byte Ed25519 private key",
                         hint="make one with `ka keygen --identity DIR`")
    if options.encrypt and options.key is None:
        raise UsageError("encryption needs a key", hint="give --key-file")


def send(source: Source, options: SendOptions,
         on_event: Callable[[Event], None] | None = None,
         stop: threading.Event | None = None) -> SessionReport:
    """Broadcast `source` to the nodes of a session; see ka.transport for the contract.

    Setting `stop` ends the session at once (its nodes are told, the call raises
    TransportError): how a serving golden node ends a run that is waiting or sending."""
    validate(options)
    emit = on_event or (lambda e: None)
    level = compression_level(options.compress)
    source.check()  # a missing input file is said now, not after every node has joined
    root = session_key(options.key)
    if options.key is None:
        emit(Event(EventKind.WARNING, "no key: this session is open, anyone on the network "
                                      "can join it and read the stream (use --key-file)"))
    try:
        control = listen(options.bind, options.port)
    except OSError as e:
        raise TransportError(f"cannot listen on TCP port {options.port}: {e.strerror}",
                             hint="another ka send may be running; choose another --port") from e
    ring = SharedRing(options.ring_size)
    inbox = _Inbox(queue.Queue())
    relay = Relay(ring, root, listen(options.bind),
                  lambda kind, text: inbox.put("note", None, (kind, text)))
    responder = None
    stopping = threading.Event()
    try:
        if options.session is not None:
            try:
                responder = DiscoveryResponder(root, options.session, options.port,
                                               options.bind, options.identity)
            except OSError as e:
                raise TransportError(f"cannot listen on UDP port {options.port}: {e.strerror}",
                                     hint="choose another --port") from e
        threading.Thread(target=accept_loop, name="control-accept", daemon=True, args=(
            control, lambda sock, peer: _greet(sock, peer, root, inbox),
            lambda joined: inbox.put("join", None, joined), stopping.is_set,
            lambda kind, text: inbox.put("note", None, (kind, text)))).start()
        emit(Event(EventKind.LISTENING,
                   f"waiting for {options.nodes} node(s) on port {options.port}"
                   + (f", session {options.session!r}" if options.session else ""),
                   data={"port": options.port, "session": options.session}))
        salt = os.urandom(16)
        sealed = options.key is not None and options.encrypt is not False
        producer = Producer(source, ring, chunk_key(root, salt), options.chunk_size, level,
                            seal_key(root, salt) if sealed else None, session_id=salt,
                            identity=options.identity)
        session = Session(options, ring, relay, producer, emit, salt)
        try:
            return _run(session, inbox, options, stop)
        finally:
            if session.started and not producer.done.is_set():
                producer.abort()
            for ns in session.nodes.values():
                if ns.connected:
                    ns.chan.close()
    finally:
        stopping.set()
        if responder is not None:
            responder.close()
        shut(control)
        control.close()
        relay.close()
        ring.close()


def _greet(sock: socket.socket, peer: tuple[str, int], root: bytes, inbox: _Inbox
           ) -> tuple[Channel, str, Join] | None:
    """Handshake and first message of a control connection, both within JOIN_TIMEOUT."""
    where = f"{peer[0]}:{peer[1]}"
    deadline = time.monotonic() + JOIN_TIMEOUT
    try:
        _, chan = respond(sock, root, (auth.CONTROL,), deadline)
        msg = chan.recv(deadline)
        if not isinstance(msg, Join):
            raise ProtocolError("expected join")
        sock.settimeout(None)
        # A node that stops reading must never block the coordinator: bound every send.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 2, 0))
    except KeyMismatch:
        inbox.put("note", None, (EventKind.BAD_KEY, f"dropped {where}: it does not hold the key"))
        sock.close()
        return None
    except (ProtocolError, OSError) as e:
        inbox.put("note", None, (EventKind.STRAY, f"dropped control connection from {where}: {e}"))
        sock.close()
        return None
    return chan, peer[0], msg


def _read(node: str, chan: Channel, inbox: _Inbox) -> None:
    while True:
        try:
            msg = chan.recv()
        except (ProtocolError, OSError) as e:
            inbox.put("closed", node, str(e))
            return
        inbox.put("msg", node, msg)


def _run(session: Session, inbox: _Inbox, options: SendOptions,
         stop: threading.Event | None) -> SessionReport:
    while True:
        if stop is not None and stop.is_set():
            for ns in session.nodes.values():
                ns.send(Abort("the golden node is ending the run"))
            raise TransportError("stopped: the golden node is ending the run")
        # Everything waiting is handled before the clock is run: after a pause of this loop
        # (a loaded or suspended machine) the nodes' reports are queued here, and a tick
        # after the first of them took every other node for dead.
        batch = []
        try:
            batch.append(inbox.queue.get(timeout=0.1))
            while len(batch) < MAX_BATCH:
                batch.append(inbox.queue.get_nowait())
        except queue.Empty:
            pass
        now = time.monotonic()
        for kind, node, item in batch:
            if kind == "join":
                chan, address, msg = item
                state = session.join(chan, address, msg, now)
                if state is not None:
                    threading.Thread(target=_read, args=(state.id, chan, inbox),
                                     daemon=True).start()
            elif kind == "msg":
                assert node is not None
                session.receive(node, item, now)
            elif kind == "closed":
                assert node is not None
                session.closed(node, item, now)
            elif kind == "note":
                session.emit(Event(item[0], item[1]))
        report = session.tick(now)
        if report is not None:
            return report


def decode_attachment(value: str | None) -> bytes | None:
    return base64.b64decode(value) if value else None


__all__ = ["send", "validate", "NodeRecord", "Progress", "decode_attachment"]
