"""Automatic MVCC history retention: the leader proposes Compact entries.

By revision count (keep the last N revisions) and/or by age (keep what was
written in the last S seconds, as the leader's monotonic clock saw it). The
leader samples (time, revision) once a second; a new leader starts sampling
afresh, so age-based retention never compacts history younger than the age
on any leader's clock. Compaction is an ordinary log entry: every replica
compacts at the same revision, and reads or watches below it fail with
Compacted naming the compacted revision.
"""

from __future__ import annotations

from collections import deque

__all__ = ["Retention"]

CHECK_S = 1.0


class Retention:
    """Decides when the leader should compact, and to which revision.

    Args:
        keep_revisions: keep at least this many revisions of history (0: no limit by count).
        keep_seconds: keep at least this much history by age (0: no limit by age).
    """

    def __init__(self, keep_revisions: int = 0, keep_seconds: float = 0.0) -> None:
        self.keep_revisions = keep_revisions
        self.keep_seconds = keep_seconds
        self._samples: deque[tuple[float, int]] = deque()
        self._next_check = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.keep_revisions or self.keep_seconds)

    def reset(self) -> None:
        """Leadership changed: forget samples taken on another term's clock."""
        self._samples.clear()
        self._next_check = 0.0

    def due(self, now: float, revision: int, compact_revision: int) -> int | None:
        """The revision to compact at now, or None."""
        if not self.enabled or now < self._next_check:
            return None
        self._next_check = now + CHECK_S
        self._samples.append((now, revision))
        targets = []
        if self.keep_revisions:
            targets.append(revision - self.keep_revisions)
        if self.keep_seconds:
            old = None
            while self._samples and self._samples[0][0] <= now - self.keep_seconds:
                old = self._samples.popleft()
            if old is None:
                return None  # not leading for long enough to know what is old
            self._samples.appendleft(old)  # keep the boundary sample for next time
            targets.append(old[1])
        target = min(targets)
        # Compact in steps of at least 1% of what is kept, not every revision.
        step = max(1, (self.keep_revisions or 100) // 100)
        if target <= compact_revision + step - 1 or target < 1:
            return None
        return target
