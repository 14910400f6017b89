"""Back-pressure in SharedRing, with threads but no network."""

from __future__ import annotations

import threading
import time

import pytest

from ka.transport.relay import RingClosed, SharedRing


def put_in_thread(ring: SharedRing, frame: bytes) -> threading.Thread:
    t = threading.Thread(target=ring.put, args=(frame,), daemon=True)
    t.start()
    return t


def test_producer_waits_for_the_slowest_node_floor() -> None:
    ring = SharedRing(100)
    ring.set_floor(0)
    for _ in range(4):
        ring.put(b"x" * 25)
    blocked = put_in_thread(ring, b"y" * 25)
    blocked.join(0.3)
    assert blocked.is_alive(), "a fifth frame would put the producer a ring ahead of the floor"
    ring.set_floor(25)
    blocked.join(2)
    assert not blocked.is_alive() and ring.end == 125


def test_local_reader_paces_the_writer_and_keeps_its_frames() -> None:
    ring = SharedRing(60)
    reader = object()
    assert ring.add_cursor(reader, 0)
    ring.put(b"a" * 30)
    ring.put(b"b" * 30)
    blocked = put_in_thread(ring, b"c" * 30)
    blocked.join(0.3)
    assert blocked.is_alive()
    assert ring.get(0, lambda: False) == b"a" * 30  # still there for the slow reader
    ring.move(reader, 30)
    blocked.join(2)
    assert not blocked.is_alive()
    assert ring.get(30, lambda: False) == b"b" * 30


def test_reader_waits_for_data_and_stops_when_closed() -> None:
    ring = SharedRing(100)
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(bytes(ring.get(0, lambda: False))))
    t.start()
    time.sleep(0.1)
    ring.put(b"hello")
    t.join(2)
    assert got == [b"hello"]
    ring.close()
    with pytest.raises(RingClosed):
        ring.get(5, lambda: False)
    with pytest.raises(RingClosed):
        ring.put(b"late")


def test_a_node_is_admitted_late_only_while_the_start_is_held() -> None:
    ring = SharedRing(100)
    ring.put(b"x" * 40)
    assert ring.admit_from_start(margin=20)
    ring.put(b"x" * 40)
    assert not ring.admit_from_start(margin=30)  # 80 + 30 > 100: the start may go any moment
    big = SharedRing(50)
    big.set_floor(None)
    for _ in range(4):
        big.put(b"z" * 20)
    assert big.ring.start > 0
    assert not big.admit_from_start(margin=0)


def test_a_son_ahead_of_its_new_parent_waits_until_the_parent_gets_there() -> None:
    """A node moved to the tail attaches at its own offset, ahead of the tail."""
    ring = SharedRing(100)
    ring.put(b"a" * 20)
    assert ring.reach(20, time.monotonic())  # already there
    reached: list[bool] = []
    t = threading.Thread(target=lambda: reached.append(ring.reach(40, time.monotonic() + 5)))
    t.start()
    t.join(0.2)
    assert t.is_alive()
    ring.put(b"b" * 20)
    t.join(2)
    assert reached == [True] and ring.add_cursor(object(), 40)
    start = time.monotonic()
    assert not ring.reach(60, start + 0.2)  # never got there: refused at the deadline
    assert 0.15 < time.monotonic() - start < 2
