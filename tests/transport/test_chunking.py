"""The chunk sizes the sender picks: the largest chunk bounds the last node's lag."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ka.transport.chunking import AUTO_MIN, LAG_SHARE, STEP, ChunkSizer
from ka.transport.options import CHUNK_SIZE

MIB = 1 << 20


def lag_share(chunks: list[int], hops: int) -> float:
    """(T(D) - T(1)) / T(1) of a pipeline of `hops` equal links: (D - 1) * max / sum."""
    return (hops - 1) * max(chunks) / sum(chunks)


def cut(sizer: ChunkSizer, total: int) -> list[int]:
    chunks, produced = [], 0
    while produced < total:
        n = min(sizer.next(produced), total - produced)
        chunks.append(n)
        produced += n
    return chunks


def test_twenty_mib_to_thirty_two_nodes() -> None:
    sizer = ChunkSizer(hops=32, length=20 * MIB)
    assert sizer.next(0) == AUTO_MIN == 32 * 1024  # the floor: 13.2 KiB would do
    assert 1 + lag_share(cut(sizer, 20 * MIB), 32) < 1.05  # 256 KiB chunks: 1.39


def test_one_hop_and_long_streams_keep_the_big_chunk() -> None:
    assert ChunkSizer(hops=1, length=20 * MIB).next(0) == CHUNK_SIZE
    assert ChunkSizer(hops=32, length=4 << 30).next(0) == CHUNK_SIZE
    assert ChunkSizer(hops=8, length=None).next(1 << 30) == CHUNK_SIZE


def test_an_explicit_size_is_kept() -> None:
    sizer = ChunkSizer(hops=32, length=20 * MIB, fixed=4096)
    assert sizer.next(0) == sizer.next(10 * MIB) == sizer.largest == 4096


def test_a_stream_of_unknown_length_starts_small_and_grows() -> None:
    sizer = ChunkSizer(hops=32)
    sizes = [sizer.next(p) for p in (0, 20 * MIB, 100 * MIB, 400 * MIB)]
    assert sizes == sorted(sizes) and sizes[0] == AUTO_MIN and sizes[-1] == CHUNK_SIZE


@given(hops=st.integers(1, 20_000), total=st.integers(1, 8 << 30),
       known=st.booleans())
def test_every_chunk_within_bounds_and_the_lag_within_its_share(hops: int, total: int,
                                                                known: bool) -> None:
    sizer = ChunkSizer(hops=hops, length=total if known else None)
    for produced in (0, total // 3, total):
        n = sizer.next(produced)
        assert AUTO_MIN <= n <= CHUNK_SIZE == sizer.largest and n % STEP == 0
        # Never more than the share allows, unless the floor does.
        if hops > 1 and n > AUTO_MIN:
            assert (hops - 1) * n <= LAG_SHARE * max(produced, total if known else 0)
