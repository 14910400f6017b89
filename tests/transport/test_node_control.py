"""A node's side of the control plane: what `ka receive` does with each message the real
Session sends it, without a network (the Session on memory links, the node's data path
replaced by recorders)."""

from __future__ import annotations

from typing import Any

import pytest

from ka.transport.errors import StreamCut
from ka.transport.messages import Message, Plan, Pos, Welcome
from ka.transport.node import ParentTarget
from ka.transport.options import ReceiveOptions, SendOptions
from ka.transport.receiver import _Node
from ka.transport.testing import ControlPlane, RemoteNode, link_pair
from ka.transport.topology import ROOT

SENDER = "192.168.7.1:30765"


class Recorder:
    """The node's upstream, relay and consumer writer: what they were told."""

    def __init__(self) -> None:
        self.targets: list[ParentTarget] = []
        self.allowed: dict[str, str] = {}
        self.dropped: list[str] = []
        self.starts = 0

    def retarget(self, target: ParentTarget) -> None:
        self.targets.append(target)

    def allow(self, tickets: dict[str, str]) -> None:
        self.allowed.update(tickets)

    def drop(self, son: str) -> None:
        self.dropped.append(son)

    def start(self) -> None:
        self.starts += 1


class NodeUnderTest:
    def __init__(self, remote: RemoteNode) -> None:
        self.remote = remote
        self.node = _Node(link_pair()[0], b"k" * 32, None, ReceiveOptions(host="x"),  # type: ignore[arg-type]
                          SENDER, lambda e: None)
        self.data = Recorder()
        self.finished = False

    def handle_all(self) -> None:
        r: Any = self.data
        for msg in self.remote.messages()[self._seen:]:
            if isinstance(msg, Welcome):
                continue  # taken by the join itself, before the node's loop
            self.finished = self.node._handle(msg, None, r, r, r) or self.finished  # type: ignore[arg-type]
        self._seen = len(self.remote.messages())

    _seen = 0


def test_a_node_follows_its_plan_and_feeds_the_son_the_sender_names() -> None:
    plane = ControlPlane(SendOptions(nodes=2))
    a, b = NodeUnderTest(plane.join("a")), NodeUnderTest(plane.join("b"))
    plane.tick()
    a.handle_all()
    b.handle_all()
    # a takes the stream from the sender's own address, b from a's data listener
    assert a.data.targets == [ParentTarget(1, ROOT, "192.168.7.1", plane.relay.port,
                                           a.remote.last(Plan).ticket)]
    assert b.data.targets[-1].address == a.remote.address and b.data.targets[-1].id == a.remote.id
    # a lets exactly b attach, with the ticket b will show
    assert a.data.allowed == {b.remote.id: b.data.targets[-1].ticket}
    assert a.data.starts == b.data.starts == 1 and a.node.position == 1


def test_a_son_retargets_when_its_parent_is_evicted_and_the_consumer_starts_once() -> None:
    plane = ControlPlane(SendOptions(nodes=3))
    a, b, c = (NodeUnderTest(plane.join(n)) for n in "abc")
    plane.tick()
    for n in (a, b, c):
        n.handle_all()
    b.remote.cut()
    plane.tick()
    a.handle_all()
    c.handle_all()
    assert [t.id for t in c.data.targets] == [b.remote.id, a.remote.id]
    assert c.data.targets[1].epoch > c.data.targets[0].epoch
    assert a.data.dropped == [b.remote.id] and c.remote.id in a.data.allowed
    assert c.data.starts == 1


def test_eviction_and_abort_end_the_node_with_the_reason() -> None:
    plane = ControlPlane(SendOptions(nodes=2, stall_timeout=1.0))
    a, b = NodeUnderTest(plane.join("a")), NodeUnderTest(plane.join("b"))
    plane.tick()
    a.handle_all()
    b.handle_all()
    plane.producer.produce(1 << 20)
    for _ in range(10):
        a.remote.report(1 << 20, consumed=0)  # its consumer takes nothing
        b.remote.report(0)
        plane.tick(0.25)
    with pytest.raises(StreamCut, match="evicted by the sender: no progress"):
        a.handle_all()


def test_finish_releases_the_node() -> None:
    plane = ControlPlane(SendOptions(nodes=1))
    a = NodeUnderTest(plane.join("a"))
    plane.tick()
    plane.producer.produce(10)
    plane.producer.finish()
    a.remote.done()
    plane.tick()
    a.handle_all()
    assert a.finished


@pytest.mark.parametrize("msg", [Pos(1, 1, False)])
def test_a_message_meant_for_the_sender_ends_the_node(msg: Message) -> None:
    plane = ControlPlane(SendOptions(nodes=1))
    a = NodeUnderTest(plane.join("a"))
    r: Any = a.data
    with pytest.raises(StreamCut, match="protocol error"):
        a.node._handle(msg, None, r, r, r)  # type: ignore[arg-type]
