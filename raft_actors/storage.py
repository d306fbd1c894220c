"""The durable-log boundary: a small protocol and its in-memory twin.

The Raft core never touches storage. Its driver (the replica actor, or the
deterministic simulator) persists each `Ready` through a `LogStorage` before
sending the Ready's messages, and recovers a `PersistedState` from it on restart.
`MemoryStorage` models a disk faithfully enough for the simulator: appends are
staged until `sync()`, `save_snapshot()` is durable when it returns (as the
file version is), and `crash()` drops whatever was not synced.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from raft_actors.types import Entry, HardState, PersistedState, SnapshotMeta


class LogStorage(Protocol):
    """What the replica needs from a durable log.

    Calls are not durable until `sync()` returns; appends, hard-state writes
    and compaction may be buffered and are made durable together (group
    commit: many records, one fsync).
    """

    def load(self) -> PersistedState:
        """Return the durable state: hard state, snapshot (position and data), log tail.

        `PersistedState.snapshot_data` holds the newest snapshot saved with
        `save_snapshot` (None if there is none, or if `compact()` moved the
        position past it).
        """
        ...

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries, first discarding any stored entry at index >= entries[0].index."""
        ...

    def set_hard_state(self, hard_state: HardState) -> None:
        """Replace the hard state (term, vote, commit)."""
        ...

    def sync(self) -> None:
        """Make every earlier call durable (fdatasync)."""
        ...

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Store a state machine snapshot covering the log up to `meta.index`, and
        discard the log entries it covers. Durable when it returns.

        Entries after `meta.index` survive when the log's entry at
        `meta.index` has term `meta.term` (the snapshot is a prefix of this
        log). Otherwise (a follower installing a leader's snapshot its log
        does not reach or disagrees with) the whole log is discarded, and the
        next append starts at `meta.index + 1`. A snapshot older than the
        stored one, or the stored one again, is ignored. Only the newest
        snapshot is kept.

        Raises:
            ValueError: meta.index is 0, a field does not fit the format, or
                discarding the log would drop entries past `meta.index` that
                the hard state says are committed.
        """
        ...

    def compact(self, snapshot: SnapshotMeta) -> None:
        """Discard entries at or below snapshot.index, keeping the rest, without
        storing snapshot data (the application keeps its snapshot elsewhere).
        Prefer `save_snapshot`."""
        ...

    def close(self) -> None:
        """Release files. Unsynced work may be lost."""
        ...


class MemoryStorage:
    """In-memory `LogStorage` with crash semantics, for tests and the simulator."""

    def __init__(self) -> None:
        self._durable = PersistedState()
        self._hard_state = HardState()
        self._snapshot = SnapshotMeta()
        self._snapshot_data: bytes | None = None
        self._entries: list[Entry] = []
        self.syncs = 0

    def load(self) -> PersistedState:
        self._hard_state = self._durable.hard_state
        self._snapshot = self._durable.snapshot
        self._snapshot_data = self._durable.snapshot_data
        self._entries = list(self._durable.entries)
        return self._durable

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        offset = self._snapshot.index + 1
        # invariant: the log stays contiguous, so an append may not leave a gap
        if first > offset + len(self._entries):
            raise ValueError(f"append at {first} leaves a gap after {offset + len(self._entries) - 1}")
        if first < offset:
            raise ValueError(f"append at {first} rewrites compacted entries (snapshot at {offset - 1})")
        # invariant: a committed entry is never overwritten (FileStorage refuses it too)
        if first <= self._durable.hard_state.commit:
            raise ValueError(f"append at {first} overwrites committed entries (commit {self._durable.hard_state.commit})")
        del self._entries[first - offset :]
        self._entries.extend(entries)

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def sync(self) -> None:
        last = self._snapshot.index + len(self._entries)
        if self._hard_state.commit > last:
            raise ValueError(f"hard state commit {self._hard_state.commit} is past the last entry {last}")
        self.syncs += 1
        self._durable = PersistedState(self._hard_state, self._snapshot, tuple(self._entries), self._snapshot_data)

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        if meta.index <= 0:
            raise ValueError(f"a snapshot covers at least entry 1, got {meta}")
        if meta.index < self._snapshot.index or (meta.index == self._snapshot.index and self._snapshot_data is not None):
            return
        staged = tail_after_snapshot(self._snapshot, self._entries, meta)
        durable = self._durable
        kept = tail_after_snapshot(durable.snapshot, durable.entries, meta)
        commit = max(self._hard_state.commit, durable.hard_state.commit)
        if (staged is None or kept is None) and commit > meta.index:
            raise ValueError(f"snapshot {meta} disagrees with the log, whose entries up to {commit} "
                             "are committed: refusing to discard them")
        self._entries = staged or []
        self._snapshot, self._snapshot_data = meta, data
        self._durable = PersistedState(durable.hard_state, meta, tuple(kept or ()), data)

    def compact(self, snapshot: SnapshotMeta) -> None:
        drop = snapshot.index - self._snapshot.index
        if drop <= 0:
            return
        del self._entries[:drop]
        self._snapshot = snapshot
        self._snapshot_data = None  # the stored snapshot no longer sits at the position

    def crash(self) -> None:
        """Forget everything not synced, as a power cut would."""
        self.load()

    def close(self) -> None:
        pass


def tail_after_snapshot(snapshot: SnapshotMeta, entries: Sequence[Entry], meta: SnapshotMeta) -> list[Entry] | None:
    """The entries after `meta.index` that a snapshot at `meta` leaves in place.

    A log (`entries` after `snapshot`) keeps its tail only if its entry at
    meta.index has meta.term; None means the log disagrees and all of it goes.
    A log that ends before meta.index keeps nothing (an empty list).
    """
    offset = meta.index - snapshot.index - 1
    if offset >= len(entries):
        return []
    term = snapshot.term if offset == -1 else entries[offset].term
    return list(entries[offset + 1 :]) if term == meta.term else None
