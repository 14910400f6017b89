from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ka.transport.ring import RetentionRing


def test_append_and_lookup() -> None:
    ring = RetentionRing(100)
    a = ring.append(b"a" * 10)
    b = ring.append(b"b" * 20)
    assert (a, b, ring.end) == (0, 10, 30)
    assert ring.frame_at(10) == b"b" * 20
    assert ring.frame_at(5) is None  # not a frame boundary
    assert ring.frame_at(30) is None and ring.holds(30)  # the end: nothing yet, but resumable


def test_keeps_what_readers_need_and_the_last_capacity_bytes() -> None:
    ring = RetentionRing(25)
    for _ in range(5):
        ring.append(b"x" * 10)  # frames at 0,10,20,30,40; end 50
    ring.trim(keep_from=0)  # a reader still at 0: nothing may go
    assert ring.start == 0 and ring.frame_at(0) is not None
    ring.trim(keep_from=50)
    # frames wholly before end - capacity (25) are gone; the one straddling 25 stays
    assert ring.start == 20
    assert ring.frame_at(10) is None and not ring.holds(10)
    assert ring.frame_at(20) is not None and ring.holds(40)


@given(
    st.integers(1, 500),
    st.lists(st.tuples(st.integers(1, 60), st.integers(0, 100)), min_size=1, max_size=200),
)
def test_retention_invariants(capacity: int, ops: list[tuple[int, int]]) -> None:
    ring = RetentionRing(capacity)
    starts: list[int] = []
    reader = 0
    for size, lag in ops:
        starts.append(ring.append(bytes([len(starts) % 256]) * size))
        reader = max(reader, ring.end - lag)  # a reader only moves forward
        ring.trim(keep_from=reader)
        for s in starts:
            if s >= min(reader, ring.end - capacity):
                # every frame a reader may still need, or within capacity of the end, is kept
                assert ring.frame_at(s) is not None
        assert ring.retained <= max(capacity, ring.end - min(reader, ring.end)) + 60
    for i, s in enumerate(starts):
        frame = ring.frame_at(s)
        if frame is not None:
            assert frame[0] == i % 256


def test_compaction_keeps_offsets_right() -> None:
    ring = RetentionRing(50)
    for i in range(2000):
        ring.append(bytes([i % 256]) * 10)
        ring.trim(ring.end)
    assert ring.frame_at(ring.end - 10) == bytes([1999 % 256]) * 10
    assert len(ring) <= 6
