"""RetentionRing: the last `capacity` bytes of the frame stream, kept as whole frames.

Pure data structure (no locks, no I/O). A node keeps every frame that starts at or after
`end - capacity`, plus anything a local reader has not taken yet, so a descendant whose
position is within `capacity` of the producer can always resume from any ancestor.
Memory: at most `capacity` bytes plus one frame.
"""

from __future__ import annotations

from bisect import bisect_left


class RetentionRing:
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._offsets: list[int] = []
        self._frames: list[bytes | bytearray] = []
        self._head = 0  # index of the oldest retained frame
        self.start = 0  # frame-stream offset of the oldest retained byte
        self.end = 0  # frame-stream offset after the newest frame

    @property
    def retained(self) -> int:
        return self.end - self.start

    def __len__(self) -> int:
        return len(self._frames) - self._head

    def append(self, frame: bytes | bytearray) -> int:
        """Store `frame` at offset `end`; return that offset."""
        if not frame:
            raise ValueError("empty frame")
        offset = self.end
        self._offsets.append(offset)
        self._frames.append(frame)
        self.end += len(frame)
        return offset

    def trim(self, keep_from: int) -> None:
        """Forget frames that end at or before both `keep_from` and `end - capacity`."""
        limit = min(keep_from, self.end - self.capacity)
        frames, offsets = self._frames, self._offsets
        head = self._head
        while head < len(frames) and offsets[head] + len(frames[head]) <= limit:
            frames[head] = b""
            head += 1
        self._head = head
        self.start = offsets[head] if head < len(frames) else self.end
        if head > 256 and head * 2 > len(frames):
            del frames[:head], offsets[:head]
            self._head = 0

    def holds(self, offset: int) -> bool:
        """True if a reader may resume at `offset` (a retained frame boundary or `end`)."""
        if offset == self.end:
            return True
        return self._index(offset) is not None

    def frame_at(self, offset: int) -> bytes | bytearray | None:
        """The frame starting at `offset`, or None when it is not (or no longer) retained."""
        i = self._index(offset)
        return None if i is None else self._frames[i]

    def _index(self, offset: int) -> int | None:
        if offset < self.start or offset >= self.end:
            return None
        i = bisect_left(self._offsets, offset, lo=self._head)
        if i < len(self._offsets) and self._offsets[i] == offset:
            return i
        return None
