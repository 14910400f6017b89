"""The real control plane at scale: a Session over in-memory links, N simulated nodes.

The sender's Session is the real one (ka.transport.session), driven as ka send drives it
(every message handed over, then one tick) on a ControlPlane of ka.transport.testing. The
nodes are simulated: each follows its plans, takes the stream from its parent over a link of
`link_rate` bytes/s shared by the parent's sons, stores and forwards whole chunks (so node i
starts i chunk-times late, as in a real chain), feeds a consumer, and reports as `ka receive`
does (a position every HEARTBEAT, and every ring/16 consumed). Failures come at seeded
random times: a node killed (its connection closes), stalled (the machine hangs: silence),
slow (a consumer at a quarter of the rate), its data connection reset (it re-attaches), and
the sender's own link briefly down (nothing crosses it for a while).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from enum import StrEnum

from ka.transport.health import HEARTBEAT
from ka.transport.messages import Abort, Done, Evict, Finish, Lost, NodeState, Plan
from ka.transport.options import SendOptions
from ka.transport.testing import ControlPlane, RemoteNode
from ka.transport.topology import ROOT

MiB = 1024 * 1024
RETRY_PAUSE = 0.5  # ka.transport.node: a node retries its parent after this
DIGEST = "5e" * 32


class Fault(StrEnum):
    KILLED = "killed"
    STALLED = "stalled"
    SLOW = "slow"
    RESET = "reset"
    SENDER_DOWN = "sender-down"


@dataclass(frozen=True)
class Failure:
    fault: Fault
    at: float  # seconds after the start
    node: int = 0  # index in the join order (not for SENDER_DOWN)
    seconds: float = 1.5  # SENDER_DOWN: how long nothing crosses the sender's link


@dataclass(frozen=True)
class Scenario:
    nodes: int
    arity: int = 1
    size: int = 64 * MiB
    link_rate: float = 125e6  # bytes/s: 1 Gbit/s
    latency: float = 0.0002  # one way, per hop
    chunk: int = 256 * 1024
    ring_size: int = 64 * MiB
    step: float = 0.1  # the sender's loop wakes at least this often
    stall_timeout: float = 5.0
    failures: tuple[Failure, ...] = ()


def random_failures(nodes: int, seed: int, duration: float) -> tuple[Failure, ...]:
    """One failure of each kind (and one more kill per 1,000 nodes) at seeded times within
    the first 80 % of `duration`, on distinct nodes."""
    rng = random.Random(seed)
    kinds = [Fault.KILLED, Fault.STALLED, Fault.SLOW, Fault.RESET] + [Fault.KILLED] * (
        nodes // 1000)
    victims = rng.sample(range(nodes), min(len(kinds), nodes))
    out = [Failure(k, round(rng.uniform(0.05, 0.8) * duration, 2), v)
           for k, v in zip(kinds, victims, strict=False)]
    out.append(Failure(Fault.SENDER_DOWN, round(rng.uniform(0.05, 0.8) * duration, 2)))
    return tuple(sorted(out, key=lambda f: f.at))


@dataclass
class SimNode:
    remote: RemoteNode
    parent: str | None = None  # None: no plan yet
    ready_at: float = 0.0  # the attach to the parent is done then
    received: int = 0
    consumed: int = 0
    reported_at: float = float("-inf")
    reported: int = 0
    rate: float = 0.0  # consumer, bytes/s
    dead: bool = False  # killed or hung: does nothing more
    out: bool = False  # evicted, aborted or released
    done_sent: bool = False


@dataclass
class Outcome:
    """What a run measured, per failure and in all."""

    scenario: Scenario
    seconds: float = 0.0  # simulated session time, start to report
    detect: list[float] = field(default_factory=list)  # failure -> eviction
    heal: list[float] = field(default_factory=list)  # failure -> every orphan re-attached
    messages: int = 0  # control messages through the sender, both ways
    cpu: float = 0.0  # process time spent in the sender's control plane (s)
    memory: int = 0  # bytes held by the Session (its records, plan, progress)
    complete: int = 0  # live nodes done with the right digest
    reported_failed: int = 0  # failed nodes evicted with a reason
    wrong: list[str] = field(default_factory=list)  # anything else: a node left unexplained

    @property
    def per_node_per_second(self) -> float:
        return self.messages / self.scenario.nodes / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_second(self) -> float:
        return self.cpu / self.seconds if self.seconds else 0.0


class Simulation:
    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        options = SendOptions(nodes=scenario.nodes, arity=scenario.arity,
                              ring_size=scenario.ring_size, chunk_size=scenario.chunk,
                              stall_timeout=scenario.stall_timeout)
        self.plane = ControlPlane(options)
        self.clock = self.plane.clock
        self.nodes = [SimNode(self.plane.join(f"n{i}"), rate=scenario.link_rate)
                      for i in range(scenario.nodes)]
        self.by_id = {n.remote.id: n for n in self.nodes}
        self.start = 0.0
        self.down_until = float("-inf")
        self.failed_at: dict[str, float] = {}
        self.orphans: dict[str, tuple[float, set[str]]] = {}  # failed -> (time, its sons)
        self.out = Outcome(scenario)

    def run(self, limit: float = 600.0) -> Outcome:
        cpu = 0.0
        t0 = time.process_time()
        self._sender_step()
        cpu += time.process_time() - t0
        self.start = self.clock()
        pending = list(self.s.failures)
        while self.plane.report is None and self.clock() - self.start < limit:
            now = self.clock.advance(self.s.step)
            while pending and pending[0].at <= now - self.start:
                self._inject(pending.pop(0), now)
            self._produce()
            self._nodes_step(now)
            # While its link is down the sender runs on (nothing reaches it): not running its
            # clock then was a pause of the sender itself, which it rightly does not count as
            # its nodes' silence (dbe05a9), so a failure just before the outage was detected
            # 1.5 s late and the outage tested nothing.
            t0 = time.process_time()
            self._sender_step()
            cpu += time.process_time() - t0
            self._observe(now)
        self.out.cpu = cpu
        self.out.seconds = self.clock() - self.start
        self.out.memory = _deep_size(self.plane.session)
        self._final()
        return self.out

    def _sender_step(self) -> None:
        self.plane.tick()

    # the data path, simulated ---------------------------------------------------------
    def _produce(self) -> None:
        producer, ring = self.plane.producer, self.plane.ring
        if not producer.running or producer.eof_at is not None:
            return
        sons = max(1, len(self.plane.session.plan.sons(ROOT)))
        room = (ring.floor or 0) + self.s.ring_size - ring.end
        amount = min(self.s.link_rate * self.s.step / sons, room, self.s.size - producer.raw)
        if amount > 0 and self.clock() >= self.down_until:
            producer.produce(int(amount))
        if producer.raw >= self.s.size:
            producer.finish(DIGEST)

    def _holds(self, parent: str) -> tuple[int, bool]:
        """What a parent can pass on: whole chunks only, unless it has the whole stream."""
        if parent == ROOT:
            end, ended = self.plane.ring.end, self.plane.producer.eof_at is not None
        else:
            up = self.by_id[parent]
            if up.dead:
                return 0, False
            end, ended = up.received, up.received >= self.s.size
        return (end if ended else end - end % self.s.chunk - self.s.chunk), ended

    def _nodes_step(self, now: float) -> None:
        plan = self.plane.session.plan
        for node in self.nodes:
            if node.dead or node.out:
                continue
            if now >= self.down_until:
                self._read(node, now)
            if node.out or node.parent is None or now < node.ready_at:
                continue
            if node.parent == ROOT and now < self.down_until:
                pass  # the sender's link is down: nothing comes
            else:
                holds, _ = self._holds(node.parent)
                share = max(1, len(plan.sons(node.parent)))
                cap = node.consumed + self.s.ring_size
                step = self.s.link_rate * self.s.step / share
                node.received = max(node.received,
                                    int(min(holds, cap, node.received + step)))
            node.consumed = int(min(node.received, node.consumed + node.rate * self.s.step))
            self._report(node, now)

    def _read(self, node: SimNode, now: float) -> None:
        for msg in node.remote.link.pending():
            if isinstance(msg, Plan):
                node.parent = msg.parent
                node.ready_at = now + 4 * self.s.latency  # connect, handshake, attach
            elif isinstance(msg, Evict | Abort | Finish):
                node.out = True

    def _report(self, node: SimNode, now: float) -> None:
        if now < self.down_until:
            return  # the sender's link is down: a node's reports wait in its socket
        if (now - node.reported_at >= HEARTBEAT
                or node.consumed - node.reported >= self.s.ring_size // 16):
            ended = node.received >= self.s.size
            node.remote.report(node.received, node.consumed, ended)
            node.reported_at, node.reported = now, node.consumed
        if node.consumed >= self.s.size and not node.done_sent:
            node.done_sent = True
            node.remote.send(Done(True, node.consumed, DIGEST, 0, None, now - self.start))

    # failures -------------------------------------------------------------------------
    def _inject(self, failure: Failure, now: float) -> None:
        if failure.fault == Fault.SENDER_DOWN:
            self.down_until = now + failure.seconds
            return
        node = self.nodes[failure.node]
        if node.out or node.done_sent:
            return  # already finished: nothing left to fail
        if failure.fault == Fault.SLOW:
            node.rate = self.s.link_rate / 4
        elif failure.fault == Fault.RESET:
            if node.parent is not None:
                node.remote.send(Lost(node.parent, node.received, "connection reset by peer"))
                node.ready_at = now + RETRY_PAUSE + 4 * self.s.latency
        else:
            node.dead = True
            if failure.fault == Fault.KILLED:
                node.remote.cut()
            self.failed_at[node.remote.id] = now
            sons = set(self.plane.session.plan.sons(node.remote.id))
            self.orphans[node.remote.id] = (now, sons)

    def _observe(self, now: float) -> None:
        session = self.plane.session
        for nid, at in list(self.failed_at.items()):
            if session.nodes[nid].state == NodeState.EVICTED:
                self.out.detect.append(now - at)
                del self.failed_at[nid]
        for nid, (at, sons) in list(self.orphans.items()):
            if nid in self.failed_at:
                continue
            waiting = {s for s in sons if not self._attached_past(s, nid, now)}
            if not waiting:
                self.out.heal.append(now - at)
                del self.orphans[nid]
            else:
                self.orphans[nid] = (at, waiting)

    def _attached_past(self, son: str, failed: str, now: float) -> bool:
        node = self.by_id[son]
        return (node.dead or node.out or node.received >= self.s.size
                or (node.parent != failed and now >= node.ready_at))

    def _final(self) -> None:
        failed = {self.nodes[f.node].remote.id for f in self.s.failures
                  if f.fault in (Fault.KILLED, Fault.STALLED)}
        for node in self.nodes:
            rec = node.remote.record
            self.out.messages += node.remote.link.sent
            if node.remote.link.peer is not None:
                self.out.messages += node.remote.link.peer.sent
            if rec.id in failed and rec.state == NodeState.EVICTED and rec.reason:
                self.out.reported_failed += 1
            elif rec.state == NodeState.DONE and rec.done and rec.done.digest == DIGEST:
                self.out.complete += 1
            else:
                self.out.wrong.append(f"{rec.name}: {rec.state} ({rec.reason})")
        if self.plane.report is None:
            self.out.wrong.append("the session did not end")


def _deep_size(root: object) -> int:
    """Bytes of the objects reachable from `root`, links and functions excluded."""
    import sys
    from types import BuiltinFunctionType, FunctionType, MethodType, ModuleType

    from ka.transport.testing import MemoryLink
    skip = (type, ModuleType, FunctionType, BuiltinFunctionType, MethodType, MemoryLink)
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif hasattr(obj, "__dict__"):
            stack.append(vars(obj))
    return total
