"""How big the sender cuts each chunk of the stream. Pure: sizes in, sizes out.

Every hop stores and checks a whole chunk before it passes it on, so the links of a chain are
the stages of a pipeline that every chunk crosses in turn. With stages of one rate r, the last
of the D nodes down the deepest path ends at sum(chunks) / r + (D - 1) * max(chunk) / r: only
the *largest* chunk sets how far the last node ends behind the first (a proportionate flow
shop; the order of the chunks does not matter). Starting small or ending small does nothing
while a large chunk crosses the chain in between; what bounds the lag is a cap on every chunk.

So the cap is a share of the stream: (D - 1) * chunk <= LAG_SHARE * stream, i.e. T(D)/T(1) is
at most 1 + LAG_SHARE from the chunking. A stream of known length (a file, a block device)
gets that size from its first chunk. A stream of unknown length (a command's output) is at
least as long as what it has produced so far: each chunk is sized from that, so the chunks
grow with the stream and the largest is still within the share of the whole. Chunks never
go below AUTO_MIN (a frame costs a MAC, a header and a few Python calls at every hop: in the
lab, where 32 nodes share 2 cores, 16 KiB chunks made a chain CPU-bound; docs/transport.md) and
never above CHUNK_SIZE (the per-frame costs are paid; bigger ones only add memory and fill).
"""

from __future__ import annotations

from dataclasses import dataclass

from ka.transport.options import CHUNK_SIZE

LAG_SHARE = 0.02
AUTO_MIN = 32 * 1024
STEP = 4 * 1024  # chunk sizes are multiples of a page


@dataclass(frozen=True)
class ChunkSizer:
    """The size of the next chunk: `fixed` when given (`--chunk-size`), else chosen from the
    depth of the tree in hops (the sender's sons are 1 hop deep) and the stream's length."""

    hops: int = 1
    length: int | None = None  # the stream's length in bytes, when known before it is read
    fixed: int | None = None

    @property
    def largest(self) -> int:
        """No chunk is bigger: what the buffers and the ring's margins are sized for."""
        return self.fixed if self.fixed is not None else CHUNK_SIZE

    def next(self, produced: int) -> int:
        """The size of the chunk that starts after `produced` bytes of the stream."""
        if self.fixed is not None:
            return self.fixed
        if self.hops <= 1:
            return CHUNK_SIZE  # no hop waits for another: only the per-frame costs count
        known = max(produced, self.length or 0)
        cap = int(LAG_SHARE * known / (self.hops - 1)) // STEP * STEP
        return max(AUTO_MIN, min(CHUNK_SIZE, cap))
