"""A sorted set of bytes keys that stays fast at millions of keys.

A plain sorted list costs a memmove of the whole tail per insert (about 70 us
per new key at one million keys, and far worse for random keys). Here the
keys sit in chunks of at most `CHUNK` sorted keys, with the last key of each
chunk in `_maxes`: an insert bisects `_maxes`, then inserts into one small
chunk (splitting it when it doubles), so it costs O(log n + CHUNK).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import Iterable, Iterator

__all__ = ["SortedKeys"]

CHUNK = 1000


class SortedKeys:
    """Sorted, duplicate-free bytes keys with range queries."""

    __slots__ = ("_chunks", "_maxes", "_len")

    def __init__(self, sorted_keys: Iterable[bytes] = ()) -> None:
        """Build from keys already in strictly ascending order (not checked)."""
        keys = list(sorted_keys)
        self._chunks = [keys[i : i + CHUNK] for i in range(0, len(keys), CHUNK)]
        self._maxes = [c[-1] for c in self._chunks]
        self._len = len(keys)

    def copy(self) -> "SortedKeys":
        """An independent copy (the chunks are copied, the keys shared)."""
        new = SortedKeys.__new__(SortedKeys)
        new._chunks = [c[:] for c in self._chunks]
        new._maxes = self._maxes[:]
        new._len = self._len
        return new

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            yield from chunk

    def add(self, key: bytes) -> None:
        """Insert a key that is not present yet."""
        maxes = self._maxes
        if not maxes:
            self._chunks.append([key])
            maxes.append(key)
            self._len = 1
            return
        i = bisect_left(maxes, key)
        if i == len(maxes):  # past every key: the common case of ascending keys
            i -= 1
            self._chunks[i].append(key)
            maxes[i] = key
        else:
            insort(self._chunks[i], key)
        self._len += 1
        chunk = self._chunks[i]
        if len(chunk) > 2 * CHUNK:
            half = len(chunk) // 2
            self._chunks[i : i + 1] = [chunk[:half], chunk[half:]]
            maxes[i : i + 1] = [chunk[half - 1], chunk[-1]]

    def irange(self, start: bytes, end: bytes | None) -> list[bytes]:
        """Keys k with start <= k < end (no upper bound if end is None), ascending."""
        if end is not None and end <= start:
            return []
        chunks, maxes = self._chunks, self._maxes
        i = bisect_left(maxes, start)
        out: list[bytes] = []
        while i < len(chunks):
            chunk = chunks[i]
            lo = bisect_left(chunk, start) if not out else 0
            if end is not None and maxes[i] >= end:
                out.extend(chunk[lo : bisect_left(chunk, end, lo)])
                break
            out.extend(chunk[lo:])
            i += 1
        return out

    def count_range(self, start: bytes, end: bytes | None) -> int:
        """How many keys irange(start, end) would return (without building it)."""
        if end is not None and end <= start:
            return 0
        chunks, maxes = self._chunks, self._maxes
        i = bisect_left(maxes, start)
        n = 0
        first = True
        while i < len(chunks):
            chunk = chunks[i]
            lo = bisect_left(chunk, start) if first else 0
            first = False
            if end is not None and maxes[i] >= end:
                return n + bisect_left(chunk, end, lo) - lo
            n += len(chunk) - lo
            i += 1
        return n
