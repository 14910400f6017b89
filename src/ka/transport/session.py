"""The sender's session state machine: joins, start, healing, release, final report.

All state lives here and is touched only by the sender's coordinating thread; decisions come
from the pure modules (topology, health). It does no I/O of its own: it talks to the nodes
through links and to the data path through the views of ka.transport.link, and is told the
time, so tests drive it over in-memory links with a manual clock (ka.transport.testing).
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import blake3

from ka.transport.errors import ProtocolError, TransportError
from ka.transport.frame import PREFIX
from ka.transport.health import (
    DEAD_AFTER,
    Progress,
    complete_subtrees,
    gate_floor,
    is_dead,
    stalled,
)
from ka.transport.link import Clock, Link, ProducerView, RelayView, RingView
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
    NodeState,
    Ok,
    Outcome,
    Ping,
    Plan,
    Pos,
    Refused,
    Sons,
    SonTicket,
    Welcome,
)
from ka.transport.options import PROTOCOL, Event, NodeReport, SendOptions, SessionReport
from ka.transport.straggler import Move, StragglerWatch
from ka.transport.topology import ROOT, ChainPlan, Member, order_members

PROGRESS_EVERY = 1.0
# A node gives up on a silent sender after 6 s (receiver.SENDER_SILENCE): a ping a second
# tells it enough, at a fifth of the sender's messages of one per heartbeat.
PING_EVERY = 1.0
CLOSE_GRACE = 3.0
# The sender's loop runs the clock at least every 0.1 s; a longer gap between two runs is a pause
# of the sender itself (a starved or stopped process), and the nodes' silence during it is not
# theirs: it is not counted towards "no heartbeat".
OWN_PAUSE = 1.0
LIVE = (NodeState.ACTIVE, NodeState.DONE, NodeState.FAILED)
# The straggler watch runs over every node of the plan: at every tick (0.1 s) it was 38 % of
# the control plane's time at 10,000 nodes (benchmarks/scale.py under cProfile); a move waits
# for HOLD (0.5 s) of slowness anyway.
STRAGGLER_EVERY = 0.25


@dataclass
class NodeRecord:
    """The sender's record of one node."""

    id: str
    name: str | None
    address: str
    port: int
    chan: Link
    wait_release: bool
    progress: Progress
    state: NodeState = NodeState.WAITING
    position: int = 0
    raw: int = 0
    done: Done | None = None
    reason: str | None = None
    released: bool = False
    connected: bool = True
    terminal_at: float | None = None
    rate: tuple[float, int] = (0.0, 0)
    # Evicted for lack of progress while still answering (and told so): the node runs on as
    # a failed one, unlike a node that lost contact.
    stalled: bool = False
    moved: str | None = None  # why it was moved to the tail, if it was

    def send(self, msg: Message) -> bool:
        return self.connected and _try_send(self.chan, msg)


class Session:
    def __init__(self, options: SendOptions, ring: RingView, relay: RelayView,
                 producer: ProducerView, emit: Callable[[Event], None], salt: bytes = bytes(16),
                 clock: Clock = time.monotonic) -> None:
        self.salt = salt
        self.secret = os.urandom(32)  # the attach tickets of this session derive from it
        self.options, self.ring, self.relay, self.producer = options, ring, relay, producer
        self.emit = emit
        self.nodes: dict[str, NodeRecord] = {}
        self.started = False
        self.go = False
        self.first_join: float | None = None
        self.plan = ChainPlan.build([], options.arity)
        self.epoch = 0
        self.start_time = 0.0
        self.all_terminal_at: float | None = None
        self.release_queue: list[str] = []
        self.next_release = 0.0
        self.close_deadline: float | None = None
        self.last_progress = 0.0
        self.eof_seen = False
        self.clock = clock
        self.opened = clock()
        self.last_ping = float("-inf")
        self.last_tick: float | None = None
        self.stragglers = StragglerWatch() if options.move_stragglers else None
        self.next_straggler_check = 0.0

    # joining --------------------------------------------------------------------------
    def join(self, chan: Link, address: str, msg: Join, now: float) -> NodeRecord | None:
        name = msg.name
        if msg.protocol != PROTOCOL:
            _refuse(chan, f"protocol {msg.protocol} is not ours ({PROTOCOL}): "
                          "use the same ka version on the sender and the nodes")
            return None
        if msg.go_now:
            if self.started:
                _refuse(chan, "the session has already started")
            else:
                self.go = True
                _try_send(chan, Ok())
                chan.close()
                self.emit(Event(EventKind.GO_NOW, f"{name or address} asked to start now"))
            return None
        if msg.port is None:
            _refuse(chan, "a join without the node's data port")
            return None
        node_id = f"{address}:{msg.port}"
        if node_id in self.nodes:
            _refuse(chan, f"{node_id} has already joined")
            return None
        late = self.started
        if late and (self.all_terminal_at is not None
                     or not self.ring.admit_from_start(2 * (self.options.largest_chunk + PREFIX))):
            _refuse(chan, "the session has already started and the start of the stream "
                          "is gone; join the next one")
            self.emit(Event(EventKind.LATE,
                            f"refused {name or address}: the session already started"))
            return None
        if not _try_send(chan, Welcome(node_id, self.options.ring_size, self.salt.hex())):
            chan.close()  # gone already; during a late join the next check lifts the hold
            return None
        state = NodeRecord(node_id, name, address, msg.port, chan, msg.wait_release,
                           Progress(now))
        self.nodes[node_id] = state
        if late:
            self._add_late(state, now)
            return state
        if self.first_join is None:
            self.first_join = now
        self.emit(Event(EventKind.JOINED, f"{name or node_id} joined ({len(self.nodes)}/"
                                          f"{self.options.nodes})", node=node_id))
        if msg.start_now:
            self.go = True
            self.emit(Event(EventKind.GO_NOW, f"{name or node_id} asked to start now",
                            node=node_id))
        return state

    def maybe_start(self, now: float) -> None:
        count = len(self.nodes)
        waited = (self.options.wait_timeout is not None
                  and now - self.opened >= self.options.wait_timeout)
        minimum = self.options.min_nodes or 1
        gathered = (self.options.gather is not None and self.first_join is not None
                    and now - self.first_join >= self.options.gather)
        if (count >= self.options.nodes or ((self.go or gathered) and count >= 1)
                or (waited and count >= minimum)):
            self.start(now)
        elif waited:
            for ns in self.nodes.values():
                ns.send(Abort("not enough nodes joined"))
            raise TransportError(
                f"only {count} of the {minimum} node(s) needed joined within "
                f"{self.options.wait_timeout:g} s",
                hint="check that the nodes run `ka receive` with the same session and key",
            )

    def start(self, now: float) -> None:
        members = [Member(n.id, n.address, n.port, n.name) for n in self.nodes.values()]
        ordered = order_members(members, self.options.node_order)
        self.plan = ChainPlan.build([m.id for m in ordered], self.options.arity)
        for i, m in enumerate(ordered, start=1):
            ns = self.nodes[m.id]
            ns.state, ns.position, ns.progress = NodeState.ACTIVE, i, Progress(now)
        for parent in (ROOT, *self.nodes):
            self._assign(parent, self.plan.sons(parent))
        self.epoch += 1
        for ns in self.nodes.values():
            self._send_plan(ns)
        self.started, self.start_time = True, now
        self.ring.set_floor(0)  # nobody has anything yet: at most one ring ahead
        # The last node of a complete tree is one of its deepest: the chunks are sized for it.
        self.producer.start(self.plan.depth(self.plan.order[-1]) if self.plan.order else 1)
        chain = " -> ".join(["sender", *(self.nodes[n].name or n for n in self.plan.order)])
        self.emit(Event(EventKind.START, f"starting with {len(self.nodes)} node(s): {chain}",
                        data={"order": list(self.plan.order), "arity": self.options.arity,
                              "data_port": self.relay.port}))

    def _add_late(self, ns: NodeRecord, now: float) -> None:
        """A node that came after the start joins the tail and catches up from offset 0."""
        self.plan = self.plan.with_tail(ns.id, lambda n: self.nodes[n].state == NodeState.ACTIVE)
        ns.state, ns.position = NodeState.ACTIVE, self._next_position()
        up = self.plan.parent(ns.id)
        self._assign(up, [ns.id])
        self.epoch += 1
        self._send_plan(ns)
        self.emit(Event(EventKind.JOINED,
                        f"{ns.name or ns.id} joined late: catching up at the tail "
                        f"under {self.nodes[up].name or up if up else 'the sender'}",
                        node=ns.id))

    def _send_plan(self, ns: NodeRecord) -> None:
        up = self.plan.parent(ns.id)
        if up == ROOT:
            address, port = "", self.relay.port
        else:
            address, port = self.nodes[up].address, self.nodes[up].port
        ns.send(Plan(up, address, port, self.epoch, ns.position, self.ticket(ns.id, up)))

    def ticket(self, son: str, parent: str) -> str:
        """What `son` shows `parent` to be fed: only the two of them learn it (and only for
        this pair), so no other key holder can attach in a node's name (see Relay)."""
        return blake3.blake3(f"{son}|{parent}".encode(), key=self.secret).hexdigest(16)

    def _assign(self, parent: str, sons: Iterable[str]) -> None:
        tickets = {son: self.ticket(son, parent) for son in sons}
        if not tickets:
            return
        if parent == ROOT:
            self.relay.allow(tickets)
        else:
            self.nodes[parent].send(Sons(tuple(SonTicket(s, t) for s, t in tickets.items())))

    # messages -------------------------------------------------------------------------
    def receive(self, node: str, msg: Message, now: float) -> None:
        """A message from a node; one that has no place here evicts it."""
        try:
            self.message(node, msg, now)
        except ProtocolError as e:
            self.evict(node, f"protocol error: {e}", now)

    def tick(self, now: float) -> SessionReport | None:
        """Run the clock: heartbeats, the start, healing, release. The report once done."""
        if self.last_tick is not None and now - self.last_tick > OWN_PAUSE:
            self._excuse_pause(now - self.last_tick, now)
        self.last_tick = now
        if now - self.last_ping >= PING_EVERY:
            self.ping()  # also while waiting, so joined nodes know we are alive
            self.last_ping = now
        if not self.started:
            self.maybe_start(now)
            return None
        self.check(now)
        return self.report() if self.finished(now) else None

    def message(self, node: str, msg: Message, now: float) -> None:
        ns = self.nodes.get(node)
        if ns is None or ns.state == NodeState.EVICTED:
            return
        ns.progress.last_seen = now
        match msg:
            case Pos():
                ns.progress.update(now, msg.received, msg.consumed, msg.ended)
                if self.stragglers is not None:
                    self.stragglers.observe(node, now, ns.progress.received)
            case Failing():
                self.emit(Event(EventKind.CONSUMER_FAILED, f"{node}: {msg.reason}", node=node))
            case Lost():
                parent = msg.parent or "the sender"
                self.emit(Event(EventKind.UPSTREAM_LOST, f"{node} lost its parent {parent}: "
                                                         f"{msg.reason}", node=node))
            case Done() if ns.state == NodeState.ACTIVE:
                ns.done, ns.raw = msg, msg.bytes
                ns.progress.ended = True
                ok = msg.ok and msg.digest == self.producer.digest
                ns.state = NodeState.DONE if ok else NodeState.FAILED
                ns.reason = None if ok else (msg.reason or "stream digest differs")
                ns.terminal_at = now
                self.emit(Event(EventKind.DONE if ok else EventKind.FAILED,
                                f"{ns.name or node}: " + ("complete, digest verified" if ok
                                                          else str(ns.reason)), node=node))
            case Done():
                pass  # a node already evicted or failed: its late word changes nothing
            case _:
                raise ProtocolError(f"a {msg.kind!r} message is not for the sender")

    def closed(self, node: str, reason: str, now: float) -> None:
        ns = self.nodes.get(node)
        if ns is None or not ns.connected:
            return
        ns.connected = False
        if not self.started:
            del self.nodes[node]
            self.emit(Event(EventKind.LEFT, f"{ns.name or node} left before the start", node=node))
        elif ns.state == NodeState.ACTIVE:
            self.evict(node, f"lost contact ({reason})", now)
        else:
            self._leave_plan(node, now)

    # healing --------------------------------------------------------------------------
    def evict(self, node: str, reason: str, now: float, *, stalled: bool = False) -> None:
        ns = self.nodes[node]
        if not self.started:  # not placed yet: just forget it
            ns.chan.close()
            del self.nodes[node]
            self.emit(Event(EventKind.LEFT,
                            f"{ns.name or node} dropped before the start: {reason}"))
            return
        ns.state, ns.reason, ns.terminal_at = NodeState.EVICTED, reason, now
        ns.stalled = ns.send(Evict(reason)) and stalled
        ns.connected = False
        ns.chan.close()
        if node in self.plan.parents:
            up = self.plan.parent(node)
            if up == ROOT:
                self.relay.drop(node)
            else:
                self.nodes[up].send(DropSon(node))
        self.emit(Event(EventKind.EVICTED, f"{ns.name or node} evicted: {reason}", node=node))
        self._leave_plan(node, now)
        # Nodes held up by the evicted one were not at fault: restart their stall clocks.
        for other in self.plan.order:
            self.nodes[other].progress.restart_clock(now)

    def _leave_plan(self, node: str, now: float) -> None:
        if node not in self.plan.parents:
            return
        self.plan, moves = self.plan.without(node)
        for son, up in moves.items():
            ns = self.nodes[son]
            if ns.progress.ended or ns.state != NodeState.ACTIVE:
                continue
            self.epoch += 1
            self._assign(up, [son])
            self._send_plan(ns)
            ns.progress.restart_clock(now)
            self.emit(Event(EventKind.REATTACHED, f"{ns.name or son} re-attached to "
                                          f"{self.nodes[up].name or up if up else 'the sender'} "
                                          f"at offset {ns.progress.received}", node=son))

    def _move_stragglers(self, now: float) -> None:
        assert self.stragglers is not None
        order = self.plan.order
        full = self.options.ring_size - 2 * (self.options.largest_chunk + PREFIX)
        low = {n: self.nodes[n].progress.consumed for n in order}
        for son, up in self.plan.parents.items():
            if up != ROOT:
                low[up] = min(low[up], self.nodes[son].progress.received)
        def held(n: str) -> bool:
            """Its ring is full of what a node after it has not taken: back-pressure, not a
            slow node (so is everyone's pace once the fast ones are a ring ahead)."""
            return self.nodes[n].progress.received - low[n] >= full
        skip = [n for n in order if self.nodes[n].progress.ended
                or self.nodes[n].state != NodeState.ACTIVE or held(n)]
        moves = self.stragglers.due(
            self.plan, {n: self.nodes[n].progress.received for n in order}, skip, now)
        if moves:  # one at a time: a move changes the rates of every node after it
            self._move_to_tail(moves[0], now)

    def _move_to_tail(self, move: Move, now: float) -> None:
        """Its sons re-attach to its parent at their offsets, as when a node leaves; then it
        re-attaches at the tail at its own offset (the new parent waits to reach it). Never
        under the sender; a second straggler goes under the first (the tail is slow already,
        and the fast nodes no longer wait for either)."""
        assert self.stragglers is not None
        ns, moved = self.nodes[move.node], self.stragglers.moved
        moved.add(move.node)  # at most once, moved or not
        target = self.plan.without(move.node)[0].with_tail(
            move.node, lambda n: self.nodes[n].state == NodeState.ACTIVE)
        up = target.parent(move.node)
        if up == ROOT:
            return
        self._leave_plan(move.node, now)
        self.plan, ns.position = target, self._next_position()
        self._assign(up, [move.node])
        self.epoch += 1
        self._send_plan(ns)  # before its old parent drops it: it leaves, it is not cut off
        self.nodes[move.parent].send(DropSon(move.node))
        ns.progress.restart_clock(now)
        parent = self.nodes[move.parent]
        ns.moved = (f"{move.rate / 1e6:.1f} MB/s against {move.parent_rate / 1e6:.1f} MB/s "
                    f"for {parent.name or parent.id}, its parent")
        self.emit(Event(EventKind.MOVED, f"{ns.name or ns.id} moved to the tail: {ns.moved}; "
                                         f"now under {self.nodes[up].name or up}",
                        node=ns.id, data={"rate": round(move.rate), "parent": move.parent,
                                          "parent_rate": round(move.parent_rate)}))

    def _next_position(self) -> int:
        return max((n.position for n in self.nodes.values()), default=0) + 1

    def ping(self) -> None:
        for ns in self.nodes.values():
            if ns.state in (NodeState.WAITING, *LIVE):
                ns.send(Ping())

    def _excuse_pause(self, gap: float, now: float) -> None:
        """The sender did not run for `gap` seconds: every node's silence clock moves on by it
        (a node silent before the pause still has what was left of its time, not more)."""
        self.emit(Event(EventKind.WARNING, f"the sender's own loop paused {gap:.1f} s: "
                                        "the nodes' silence in it is not counted"))
        for ns in self.nodes.values():
            ns.progress.last_seen = min(now, ns.progress.last_seen + gap)

    def check(self, now: float) -> None:
        if self.producer.error is not None:
            for ns in self.nodes.values():
                ns.send(Abort(str(self.producer.error)))
            raise self.producer.error
        for ns in list(self.nodes.values()):
            if ns.state not in LIVE or ns.released or not is_dead(ns.progress, now):
                continue
            if ns.state == NodeState.ACTIVE:
                self.evict(ns.id, f"no heartbeat for {DEAD_AFTER:g} s", now)
            else:  # finished its copy but stopped answering: only stop relying on it
                ns.connected = False
                ns.chan.close()
                self._leave_plan(ns.id, now)
        in_plan = {n: self.nodes[n].progress for n in self.plan.order}
        for n in stalled(self.plan, in_plan, self.ring.end, now, self.options.stall_timeout):
            if self.nodes[n].state == NodeState.ACTIVE:
                self.evict(n, f"no progress for {self.options.stall_timeout:g} s", now,
                           stalled=True)
        if self.stragglers is not None and now >= self.next_straggler_check:
            self.next_straggler_check = now + STRAGGLER_EVERY
            self._move_stragglers(now)
        if not self.eof_seen and self.producer.eof_at is not None:
            self.eof_seen = True
            self.emit(Event(EventKind.EOF,
                            f"end of the producer's stream: {self.producer.raw} bytes, "
                            f"digest {self.producer.digest[:16]}…",
                            data={"bytes": self.producer.raw, "digest": self.producer.digest}))
        floor = gate_floor(self.nodes[n].progress for n in self.plan.order)
        if floor is None and not self.producer.done.is_set():
            self.producer.abort()
            self.ring.close()
        self.ring.set_floor(floor)
        self._release(now)
        if now - self.last_progress >= PROGRESS_EVERY:
            self.last_progress = now
            self.emit(self._progress_event(now))

    def _release(self, now: float) -> None:
        progress = {n: self.nodes[n].progress for n in self.plan.order}
        complete: set[str] | None = None
        for ns in self.nodes.values():
            if (ns.state in (NodeState.DONE, NodeState.FAILED) and not ns.released
                    and not ns.wait_release):
                if complete is None:
                    complete = complete_subtrees(self.plan, progress)
                if ns.id not in self.plan.parents or ns.id in complete:
                    self._finish(ns)
        if any(ns.state in (NodeState.WAITING, NodeState.ACTIVE) for ns in self.nodes.values()):
            return
        if self.all_terminal_at is None:
            self.all_terminal_at = now
            waiting = [ns for ns in self.nodes.values() if ns.wait_release and not ns.released
                       and ns.state != NodeState.EVICTED]
            self.release_queue = [ns.id for ns in sorted(waiting, key=lambda n: n.terminal_at or 0)]
        delay = self.options.release_delay
        while self.release_queue and (delay is None or now >= self.next_release):
            self._finish(self.nodes[self.release_queue.pop(0)])
            if delay is not None:
                self.next_release = now + delay

    def _finish(self, ns: NodeRecord) -> None:
        ns.released = True
        if ns.send(Finish()):
            self.emit(Event(EventKind.RELEASED, f"{ns.name or ns.id} released", node=ns.id))

    def finished(self, now: float) -> bool:
        if self.all_terminal_at is None or self.release_queue:
            return False
        if not all(ns.released or ns.state == NodeState.EVICTED or not ns.connected
                   for ns in self.nodes.values()):
            return False
        if self.close_deadline is None:
            self.close_deadline = now + CLOSE_GRACE
        return now >= self.close_deadline or not any(ns.connected for ns in self.nodes.values())

    # reporting ------------------------------------------------------------------------
    def _progress_event(self, now: float) -> Event:
        rows = []
        for ns in sorted(self.nodes.values(), key=lambda n: n.position):
            t0, b0 = ns.rate
            raw = (ns.raw if ns.done is not None
                   else _raw_estimate(ns, self.producer.raw, self.ring.end))
            rate = (raw - b0) / (now - t0) / 1e6 if t0 and now > t0 else 0.0
            ns.rate = (now, raw)
            rows.append({"node": ns.id, "name": ns.name, "position": ns.position,
                         "state": ns.state, "bytes": raw, "mb_per_s": round(rate, 2)})
        return Event(EventKind.PROGRESS, f"produced {self.producer.raw / 1e6:.1f} MB",
                     data={"produced": self.producer.raw, "nodes": rows})

    def report(self) -> SessionReport:
        eof = self.producer.eof_at or self.clock()
        drain_end = self.all_terminal_at or eof
        nodes = []
        for ns in sorted(self.nodes.values(), key=lambda n: n.position):
            d = ns.done
            nodes.append(NodeReport(
                node=ns.id, name=ns.name, position=ns.position, state=_OUTCOMES[ns.state],
                bytes=d.bytes if d else _raw_estimate(ns, self.producer.raw, self.ring.end),
                seconds=d.seconds if d else 0.0,
                digest_ok=d is not None and d.digest == self.producer.digest,
                consumer_status=d.consumer_status if d else None,
                reason=ns.reason,
                attachment=base64.b64decode(d.attachment) if d and d.attachment else None,
                stalled=ns.stalled,
                moved=ns.moved,
            ))
        return SessionReport(tuple(nodes), self.producer.raw, eof - self.producer.started_at,
                             max(0.0, drain_end - eof), self.producer.digest)


def _raw_estimate(ns: NodeRecord, produced_raw: int, produced_frames: int) -> int:
    """Raw bytes a node holds, estimated from frame-stream positions (exact without zstd)."""
    if produced_frames == 0:
        return 0
    return int(produced_raw * ns.progress.consumed / produced_frames)


def _try_send(chan: Link, msg: Message) -> bool:
    try:
        chan.send(msg)
        return True
    except OSError:
        return False


def _refuse(chan: Link, reason: str) -> None:
    _try_send(chan, Refused(reason))
    chan.close()


# A node still waiting or active when the report is made was cut off with the session.
_OUTCOMES = {NodeState.DONE: Outcome.OK, NodeState.FAILED: Outcome.FAILED,
             NodeState.EVICTED: Outcome.EVICTED, NodeState.ACTIVE: Outcome.FAILED,
             NodeState.WAITING: Outcome.FAILED}
