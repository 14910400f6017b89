"""`receive`: one node of a session. Find the sender, join, take the stream, relay it, prove it."""

from __future__ import annotations

import base64
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ka.errors import UsageError
from ka.keys import check_key
from ka.transport import auth
from ka.transport.channel import Channel, KeyMismatch, initiate
from ka.transport.discovery import find_sender
from ka.transport.endpoints import Sink
from ka.transport.errors import (
    ConsumerFailed,
    DigestMismatch,
    ProtocolError,
    Rejected,
    SenderNotFound,
    StreamCut,
)
from ka.transport.frame import SESSION_ID_LEN, chunk_key, seal_key, session_key
from ka.transport.health import HEARTBEAT
from ka.transport.messages import (
    Abort,
    Done,
    DropSon,
    EventKind,
    Evict,
    Failing,
    Finish,
    Join,
    Lost,
    Message,
    Ok,
    Ping,
    Plan,
    Pos,
    Sons,
    Welcome,
)
from ka.transport.node import ConsumerWriter, ParentTarget, Upstream
from ka.transport.options import PROTOCOL, Event, ReceiveOptions, ReceiveReport
from ka.transport.relay import Relay, SharedRing, listen
from ka.transport.topology import ROOT

SENDER_SILENCE = 6.0  # the sender pings every second (session.PING_EVERY)
MAX_ATTACHMENT = 1024 * 1024


def receive(
    sink: Sink, options: ReceiveOptions, on_event: Callable[[Event], None] | None = None
) -> ReceiveReport:
    emit = on_event or (lambda e: None)
    if (options.session is None) == (options.host is None):
        raise UsageError("give exactly one of a session name or a sender host")
    if options.attachment is not None and len(options.attachment) > MAX_ATTACHMENT:
        raise UsageError("the attachment is larger than 1 MiB")
    if not 0 < options.port < 65536:
        raise UsageError("--port must be between 1 and 65535")
    check_key(options.key)
    if options.golden_key is not None and len(options.golden_key) != 32:
        raise UsageError("--golden-key must be a 32-byte Ed25519 public key",
                         hint="the golden.pub that `ka keygen --identity DIR` wrote")
    if options.find_timeout < 0:
        raise UsageError("--find-timeout must not be negative")
    root = session_key(options.key)
    if options.key is None:
        emit(Event(EventKind.WARNING, "no key: this session is open to anyone on the network"))
    deadline = time.monotonic() + options.find_timeout
    address, port = _locate(root, options, deadline, emit)
    chan = _connect(root, address, port, deadline)
    sender = f"{address}:{port}"
    try:
        if options.go_now:
            return _go_now(chan, options, sender, emit)
        return _Node(chan, root, sink, options, sender, emit).run()
    except OSError as e:  # a send on the control connection failed: the sender is gone
        raise StreamCut(f"lost contact with the sender at {sender}: {e.strerror or e}",
                        hint="the sender stopped or the network failed; run again") from e
    finally:
        chan.close()


def _locate(root: bytes, options: ReceiveOptions, deadline: float,
            emit: Callable[[Event], None]) -> tuple[str, int]:
    if options.host is not None:
        return options.host, options.port
    assert options.session is not None
    emit(Event(EventKind.DISCOVERY, f"looking for session {options.session!r} "
                            f"via {options.discovery_address}:{options.port}"))
    found = find_sender(root, options.session, options.port, options.discovery_address,
                        max(0.0, deadline - time.monotonic()), options.golden_key)
    if found is None:
        raise SenderNotFound(
            f"no sender answered for session {options.session!r} within "
            f"{options.find_timeout:g} s",
            hint="start `ka send --session NAME` first, check the name and the key, or use --host",
        )
    emit(Event(EventKind.FOUND, f"sender of {options.session!r} is {found[0]}:{found[1]}"))
    return found


def _connect(root: bytes, address: str, port: int, deadline: float) -> Channel:
    last = "no attempt"
    while True:
        try:
            sock = socket.create_connection((address, port), timeout=3.0)
        except OSError as e:
            last = e.strerror or str(e)
        else:
            try:
                return initiate(sock, root, auth.CONTROL)
            except KeyMismatch as e:
                sock.close()
                raise Rejected(f"the sender at {address}:{port} does not hold our key",
                               hint="use the same --key-file on the sender and every node") from e
            except (ProtocolError, OSError) as e:
                sock.close()
                last = str(e)
        if time.monotonic() >= deadline:
            raise SenderNotFound(f"cannot reach a sender at {address}:{port}: {last}",
                                 hint="check the address and port, and that `ka send` runs")
        time.sleep(0.5)


def _expect(chan: Channel, timeout: float) -> Message:
    chan.sock.settimeout(timeout)
    try:
        return chan.recv()
    except (ProtocolError, OSError) as e:
        raise StreamCut(f"the sender closed the connection during the join: {e}") from e
    finally:
        chan.sock.settimeout(None)


def _go_now(chan: Channel, options: ReceiveOptions, sender: str,
            emit: Callable[[Event], None]) -> ReceiveReport:
    chan.send(Join(PROTOCOL, name=options.name, go_now=True))
    reply = _expect(chan, 10.0)
    if not isinstance(reply, Ok):
        raise Rejected(f"the sender refused go-now: {getattr(reply, 'reason', reply.kind)}")
    emit(Event(EventKind.GO_NOW, "told the sender to start now"))
    return ReceiveReport(0, 0.0, "", 0, 0, sender)


class _Node:
    def __init__(self, chan: Channel, root: bytes, sink: Sink, options: ReceiveOptions,
                 sender: str, emit: Callable[[Event], None]) -> None:
        self.chan, self.root, self.sink, self.options = chan, root, sink, options
        self.sender_address = sender.rsplit(":", 1)[0]
        self.sender, self.emit = sender, emit
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.wake = threading.Event()
        self.position = 0
        self._started = False
        self._reported = 0

    def run(self) -> ReceiveReport:
        local_ip = self.chan.sock.getsockname()[0]
        listener = listen(local_ip)
        self.chan.send(Join(PROTOCOL, name=self.options.name, port=listener.getsockname()[1],
                            wait_release=self.options.wait_release,
                            start_now=self.options.start_now))
        reply = _expect(self.chan, 30.0)
        if not isinstance(reply, Welcome):
            listener.close()
            raise Rejected("the sender refused us: "
                           f"{getattr(reply, 'reason', 'no reason given')}")
        node_id = reply.id
        ring = SharedRing(reply.ring_size)
        step = max(reply.ring_size // 16, 1)
        self.emit(Event(EventKind.JOINED, f"joined the session at {self.sender} as {node_id}",
                        node=node_id))
        self._step = step
        try:
            salt = bytes.fromhex(reply.salt)
        except ValueError:
            salt = b""
        if len(salt) != SESSION_ID_LEN:
            raise StreamCut("the sender's welcome has no valid session id")
        # The payload is sealed when its frames say so (the MAC covers the flag).
        writer = ConsumerWriter(ring, self.sink, self._consumed,
                                lambda r: self.inbox.put(("failing", r)),
                                seal_key(self.root, salt), session_id=salt,
                                golden_key=self.options.golden_key)
        self._writer = writer
        relay = Relay(ring, self.root, listener,
                      lambda kind, text: self.inbox.put(("note", (kind, text))))
        upstream = Upstream(ring, self.root, chunk_key(self.root, salt), node_id,
                            lambda kind, info: self.inbox.put((kind, info)))
        threading.Thread(target=self._read_control, name="control", daemon=True).start()
        try:
            self._loop(ring, writer, relay, upstream)
        finally:
            upstream.stop()
            relay.close()
            ring.close()
            if self._started and not writer.done.wait(10.0):
                # Still writing to a consumer that takes nothing (stuck, or evicted for it):
                # end it, so no consumer outlives its node and the outcome is known.
                writer.interrupt()
                writer.done.wait(5.0)
        return self._outcome(writer)

    def _consumed(self) -> None:
        """Called by the writer per frame: report early after every `step` bytes."""
        if self._writer.consumed - self._reported >= self._step:
            self._reported = self._writer.consumed
            self.wake.set()
            self.inbox.put(("tick", None))

    def _read_control(self) -> None:
        while True:
            try:
                self.inbox.put(("msg", self.chan.recv()))
            except (ProtocolError, OSError) as e:
                self.inbox.put(("closed", str(e)))
                return

    def _report(self, ring: SharedRing, writer: ConsumerWriter) -> None:
        self._send(Pos(ring.end, writer.consumed, ring.ended))

    def _send(self, msg: Message) -> None:
        try:
            self.chan.send(msg)
        except OSError as e:
            self._why_closed(e)

    def _why_closed(self, error: OSError) -> None:
        """The sender closed our connection: say why if it told us first.

        An evicted or aborted node is told so just before the sender closes its connection;
        a send of ours can fail before the control reader has handed that message on.
        """
        deadline = time.monotonic() + 1.0
        while (left := deadline - time.monotonic()) > 0:
            try:
                kind, item = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            if kind == "msg" and isinstance(item, Evict | Abort):
                raise _ended_by_sender(item) from error
            if kind == "closed":
                break
        raise StreamCut(f"lost contact with the sender at {self.sender}: "
                        f"{error.strerror or error}",
                        hint="the sender stopped or the network failed; run again") from error

    def _loop(self, ring: SharedRing, writer: ConsumerWriter, relay: Relay,
              upstream: Upstream) -> None:
        heard = time.monotonic()
        last_report = 0.0
        done_sent = finished = False
        while not (finished and done_sent):
            try:
                kind, item = self.inbox.get(timeout=0.1)
            except queue.Empty:
                kind, item = "tick", None
            now = time.monotonic()
            if kind == "msg":
                heard = now
                finished = self._handle(item, ring, writer, relay, upstream) or finished
            elif kind == "closed":
                if done_sent and not self.options.wait_release:
                    return  # our copy is complete and proven; the sender just went first
                raise StreamCut(f"lost contact with the sender at {self.sender} ({item})",
                                hint="the sender stopped or the network failed; run again")
            elif kind == "failing":
                self._send(Failing(item))
                self.emit(Event(EventKind.CONSUMER_FAILED, item))
            elif kind == "lost":
                self._send(Lost(**item))
                self.emit(Event(EventKind.UPSTREAM_LOST, f"lost parent {item['parent']} at "
                                                         f"offset {item['offset']}: "
                                                         f"{item['reason']}"))
            elif kind == "attached":
                self.emit(Event(EventKind.ATTACHED, f"receiving from "
                                                    f"{item['parent'] or 'the sender'}"
                                                    f" at offset {item['offset']}"))
            elif kind == "note":
                self.emit(Event(item[0], item[1]))
            if now - heard > SENDER_SILENCE:
                raise StreamCut(f"the sender at {self.sender} went silent for "
                                f"{SENDER_SILENCE:g} s")
            if now - last_report >= HEARTBEAT or kind == "tick" and self.wake.is_set():
                self.wake.clear()
                self._report(ring, writer)
                last_report = now
            if writer.done.is_set() and not done_sent:
                self._report(ring, writer)
                self._send(self._done(writer))
                done_sent = True

    def _handle(self, msg: Message, ring: SharedRing, writer: ConsumerWriter,
                relay: Relay, upstream: Upstream) -> bool:
        match msg:
            case Plan():
                self.position = msg.position
                address = self.sender_address if msg.parent == ROOT else msg.address
                if not self._started:  # the consumer starts with the first plan, as the original
                    self._started = True
                    writer.start()
                upstream.retarget(ParentTarget(msg.epoch, msg.parent, address, msg.port,
                                               msg.ticket))
            case Sons():
                relay.allow({s.id: s.ticket for s in msg.sons})
            case DropSon():
                relay.drop(msg.id)
            case Evict() | Abort():
                raise _ended_by_sender(msg)
            case Finish():
                return True
            case Ping():
                pass
            case _:
                raise StreamCut(f"protocol error: a {msg.kind!r} message from the sender")
        return False

    def _done(self, writer: ConsumerWriter) -> Done:
        ok = writer.mismatch is None and writer.failure is None and writer.status == 0
        reason = writer.mismatch or writer.failure or writer.reason
        seconds = 0.0
        if writer.started_at is not None and writer.finished_at is not None:
            seconds = writer.finished_at - writer.started_at
        attachment = self.options.attachment
        return Done(ok, writer.raw, writer.digest, writer.status, reason, seconds,
                    base64.b64encode(attachment).decode() if attachment else None)

    def _outcome(self, writer: ConsumerWriter) -> ReceiveReport:
        done = self._done(writer)
        if writer.mismatch is not None:
            raise DigestMismatch(writer.mismatch)
        if writer.failure is not None or writer.status != 0:
            raise ConsumerFailed(str(done.reason), hint="see the consumer command's output")
        return ReceiveReport(writer.raw, done.seconds, writer.digest, writer.status or 0,
                             self.position, self.sender)


def _ended_by_sender(msg: Evict | Abort) -> StreamCut:
    """The error for a message by which the sender ends this node's part."""
    if isinstance(msg, Evict):
        return StreamCut(f"evicted by the sender: {msg.reason}")
    return StreamCut(f"the sender aborted the session: {msg.reason}")
