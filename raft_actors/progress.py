"""What the leader knows about each follower's log, and the flow control on it.

A follower is probed (one AppendEntries at a time) until the leader finds where
their logs agree, then replicated to optimistically: the leader pipelines
appends without waiting for answers, up to a cap on messages and bytes in
flight. A follower that needs entries the leader has compacted away is sent
the leader's snapshot instead, in chunks, with its own flow control
(`SnapshotTransfer`); once it has installed it, probing resumes after it.
"""

from __future__ import annotations

import collections
import enum

from raft_actors.types import SnapshotMeta


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2  # sending an InstallSnapshot; appends wait until it lands


class SnapshotTransfer:
    """Go-back-N sending of one snapshot's chunks to one follower.

    Chunks are numbered 0..chunks-1. The follower holds a contiguous prefix of
    them (`acked`); up to a window of chunks past it may be in flight. A
    follower that sees a gap asks for a resend from its prefix; a transfer
    without progress for a timeout resends from `acked` (the lost chunk, or
    the lost acknowledgement, is found that way).

    invariant: 0 <= acked <= next <= chunks
    """

    __slots__ = ("meta", "chunks", "next", "acked", "stall")

    def __init__(self, meta: SnapshotMeta, chunks: int) -> None:
        self.meta = meta
        self.chunks = chunks
        self.next = 0  # the next chunk to send
        self.acked = 0  # chunks the follower is known to hold
        self.stall = 0  # ticks since the follower last showed progress

    def can_send(self, window: int) -> bool:
        return self.next < self.chunks and self.next - self.acked < window

    def ack(self, held: int, rewind: bool) -> None:
        """The follower holds `held` chunks; `rewind`: it wants the rest resent."""
        held = min(held, self.chunks)
        if rewind:
            # also when held < acked: the follower restarted and lost what it had
            self.acked = self.next = held
            self.stall = 0
        elif held > self.acked:
            self.acked = held
            self.next = max(self.next, held)
            self.stall = 0

    def tick(self, timeout: int) -> bool:
        """Count a tick; True when the unacknowledged chunks should be resent."""
        self.stall += 1
        if self.stall < timeout:
            return False
        self.stall = 0
        self.next = self.acked
        return True

    def __repr__(self) -> str:
        return f"snapshot {self.meta.index}@{self.meta.term} chunks {self.acked}/{self.next}/{self.chunks}"


class Progress:
    """Replication state of one follower, kept by the leader.

    invariant: match < next
    """

    __slots__ = ("match", "next", "state", "probe_sent", "recent_active", "last_heard", "_inflight",
                 "_inflight_bytes", "max_msgs", "max_bytes", "snapshot")

    def __init__(self, next_index: int, max_msgs: int, max_bytes: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        # recent_active: heard from since the last CheckQuorum round (reset each round);
        # last_heard: the leader's tick count when it last heard from it (-1: never).
        self.recent_active = False
        self.last_heard = -1
        self._inflight: collections.deque[tuple[int, int]] = collections.deque()  # (last index, bytes)
        self._inflight_bytes = 0
        self.max_msgs = max_msgs
        self.max_bytes = max_bytes
        # invariant: snapshot is set exactly when state == SNAPSHOT (None: no data to send)
        self.snapshot: SnapshotTransfer | None = None

    def heard(self, now: int) -> None:
        """The follower answered (any response) at tick `now`."""
        self.recent_active = True
        self.last_heard = now

    def responsive(self, now: int, window: int) -> bool:
        """Heard from within the last `window` ticks."""
        return self.last_heard >= 0 and now - self.last_heard <= window

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
        self.snapshot = None
        self._clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.snapshot = None
        self._clear()

    def become_snapshot(self, meta: SnapshotMeta | None, chunks: int) -> None:
        """Start sending the snapshot `meta` in `chunks` chunks (None: there is
        no snapshot data to send; the follower stays paused)."""
        self.state = ProgressState.SNAPSHOT
        self.probe_sent = False
        self.snapshot = SnapshotTransfer(meta, chunks) if meta is not None else None
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
        moved past, or any while a snapshot is under way), True when `next`
        was moved back.
        """
        if self.state == ProgressState.SNAPSHOT:
            return False
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
        snap = f", {self.snapshot!r}" if self.snapshot is not None else ""
        return (f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
                f"inflight={len(self._inflight)}{snap})")
