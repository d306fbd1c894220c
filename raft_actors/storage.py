"""The durable-log boundary: a small protocol and its in-memory twin.

The Raft core never touches storage. Its driver (the replica actor, or the
deterministic simulator) persists each `Ready` through a `LogStorage` before
sending the Ready's messages, and recovers a `PersistedState` from it on restart.
`MemoryStorage` models a disk faithfully enough for the simulator: appends are
staged until `sync()`, and `crash()` drops whatever was not synced.
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
        """Return the durable state: hard state, snapshot position, log tail."""
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

    def compact(self, snapshot: SnapshotMeta) -> None:
        """Discard entries at or below snapshot.index (a snapshot now covers them)."""
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
        self._entries: list[Entry] = []
        self.syncs = 0

    def load(self) -> PersistedState:
        self._hard_state = self._durable.hard_state
        self._snapshot = self._durable.snapshot
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
        self._durable = PersistedState(self._hard_state, self._snapshot, tuple(self._entries))

    def compact(self, snapshot: SnapshotMeta) -> None:
        drop = snapshot.index - self._snapshot.index
        if drop <= 0:
            return
        del self._entries[:drop]
        self._snapshot = snapshot

    def crash(self) -> None:
        """Forget everything not synced, as a power cut would."""
        self.load()

    def close(self) -> None:
        pass
