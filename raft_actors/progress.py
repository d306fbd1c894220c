"""What the leader knows about each follower's log, and the flow control on it.

A follower is probed (one AppendEntries at a time) until the leader finds where
their logs agree, then replicated to optimistically: the leader pipelines
appends without waiting for answers, up to a cap on messages and bytes in
flight.
"""

from __future__ import annotations

import collections
import enum


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2  # seam: waiting for an InstallSnapshot to land (later issue)


class Progress:
    """Replication state of one follower, kept by the leader.

    invariant: match < next
    """

    __slots__ = ("match", "next", "state", "probe_sent", "recent_active", "_inflight", "_inflight_bytes",
                 "max_msgs", "max_bytes")

    def __init__(self, next_index: int, max_msgs: int, max_bytes: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.recent_active = False
        self._inflight: collections.deque[tuple[int, int]] = collections.deque()  # (last index, bytes)
        self._inflight_bytes = 0
        self.max_msgs = max_msgs
        self.max_bytes = max_bytes

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return len(self._inflight) >= self.max_msgs or self._inflight_bytes >= self.max_bytes
        return True

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.next = self.match + 1
        self.probe_sent = False
        self._clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self._clear()

    def sent(self, last_index: int, nbytes: int) -> None:
        """Record an AppendEntries carrying entries up to `last_index`."""
        if self.state == ProgressState.REPLICATE:
            self.next = last_index + 1
            self._inflight.append((last_index, nbytes))
            self._inflight_bytes += nbytes
        else:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """A follower acknowledged up to `index`; True if that is news."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        self.free_to(index)
        return updated

    def maybe_decrease(self, rejected: int, hint: int) -> bool:
        """A follower rejected an append whose previous index was `rejected`.

        Returns False for a stale rejection (one about an append we already
        moved past), True when `next` was moved back.
        """
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.become_probe()
            # fall through: the probe may start lower than match + 1 only via the hint
        elif self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def free_to(self, index: int) -> None:
        while self._inflight and self._inflight[0][0] <= index:
            _, nbytes = self._inflight.popleft()
            self._inflight_bytes -= nbytes

    def free_first(self) -> None:
        """A heartbeat answer shows the follower alive: let one more append out."""
        if self._inflight and len(self._inflight) >= self.max_msgs:
            _, nbytes = self._inflight.popleft()
            self._inflight_bytes -= nbytes

    def _clear(self) -> None:
        self._inflight.clear()
        self._inflight_bytes = 0

    def __repr__(self) -> str:
        return f"Progress(match={self.match}, next={self.next}, state={self.state.name}, inflight={len(self._inflight)})"
