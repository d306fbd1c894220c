"""The in-memory view of a replica's Raft log.

Holds every entry after the last snapshot, remembers how much of it is known to
be on disk (`stable`), committed, and handed to the application (`applied`).
The driver persists what is unstable and reports back through `stable_to`.

It also knows the configuration at every position it holds: the one in
effect at the snapshot point (or the initial one), then one per CONF entry
after it. A replica uses the latest one, committed or not (Raft dissertation
§4.1), so truncating a CONF entry reverts to the configuration before it.
"""

from __future__ import annotations

import bisect
from typing import Sequence

from raft_actors.membership import Membership, decode_conf_entry
from raft_actors.types import Entry, EntryKind, PersistedState

_CONF = EntryKind.CONF


class RaftLog:
    """Entries after `snapshot_index`, with commit and apply cursors.

    invariant: snapshot_index <= applied <= committed <= last_index
    invariant: snapshot_index <= stable <= last_index
    invariant: _confs[0][0] == snapshot_index, then one (index, membership) per
        CONF entry in `entries`, in index order
    """

    __slots__ = ("snapshot_index", "snapshot_term", "entries", "committed", "applied", "stable", "_confs",
                 "_base_recorded")

    def __init__(self, persisted: PersistedState, applied: int = 0, initial: Membership = Membership()) -> None:
        """Args:
            persisted: what storage recovered.
            applied: the application's applied index.
            initial: the configuration before index 1 (`Config.peers`); used
                when there is no snapshot, or one that does not record its
                configuration.
        """
        self.snapshot_index = persisted.snapshot.index
        self.snapshot_term = persisted.snapshot.term
        self.entries: list[Entry] = list(persisted.entries)
        if self.entries and self.entries[0].index != self.snapshot_index + 1:
            raise ValueError("persisted entries do not start right after the snapshot")
        base = persisted.snapshot.conf if self.snapshot_index and persisted.snapshot.conf is not None else initial
        self._confs: list[tuple[int, Membership]] = [(self.snapshot_index, base)]
        # whether the base configuration was read from the log (a snapshot's record),
        # rather than assumed from the replica's settings
        self._base_recorded = bool(self.snapshot_index) and persisted.snapshot.conf is not None
        self._note_confs(self.entries)
        self.committed = max(persisted.hard_state.commit, self.snapshot_index)
        if self.committed > self.last_index:
            raise ValueError(f"hard state commit {self.committed} is past the last entry {self.last_index}")
        self.applied = min(max(applied, self.snapshot_index), self.committed)
        self.stable = self.last_index

    # -- positions -------------------------------------------------------
    @property
    def first_index(self) -> int:
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot_term

    def term(self, index: int) -> int | None:
        """Term of the entry at `index`, or None when compacted or absent."""
        if index == self.snapshot_index:
            return self.snapshot_term
        offset = index - self.snapshot_index - 1
        if offset < 0 or offset >= len(self.entries):
            return None
        return self.entries[offset].term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a candidate's log at least as up to date as ours?"""
        mine = self.last_term
        return last_term > mine or (last_term == mine and last_index >= self.last_index)

    # -- configuration -----------------------------------------------------
    @property
    def conf(self) -> Membership:
        """The latest configuration in the log, committed or not."""
        return self._confs[-1][1]

    @property
    def conf_index(self) -> int:
        """Index of the CONF entry that made `conf` (the snapshot index if none is left)."""
        return self._confs[-1][0]

    @property
    def conf_recorded(self) -> bool:
        """Whether the log (a CONF entry, or the snapshot) records the configuration,
        rather than the replica assuming its initial one."""
        return self._base_recorded or len(self._confs) > 1

    @property
    def prev_conf(self) -> Membership:
        """The configuration before the latest CONF entry (`conf` itself if none is in the log)."""
        return self._confs[-2][1] if len(self._confs) > 1 else self._confs[-1][1]

    def conf_at(self, index: int) -> Membership:
        """The configuration in effect at `index` (snapshot_index <= index)."""
        if index < self.snapshot_index:
            raise IndexError(f"the configuration at {index} is compacted (snapshot at {self.snapshot_index})")
        k = bisect.bisect_right(self._confs, index, key=lambda c: c[0]) - 1
        return self._confs[k][1]

    def pending_confs(self) -> int:
        """How many CONF entries are past the commit index."""
        return sum(1 for index, _ in self._confs if index > self.committed)

    def _note_confs(self, entries: Sequence[Entry]) -> None:
        confs = self._confs
        for e in entries:
            if e.kind == _CONF:
                confs.append((e.index, decode_conf_entry(e.data).membership))

    # -- reading ---------------------------------------------------------
    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries [lo, hi), at least one if any, at most about `max_bytes` of data."""
        start = lo - self.snapshot_index - 1
        stop = hi - self.snapshot_index - 1
        if start < 0:
            raise IndexError(f"entry {lo} is compacted (snapshot at {self.snapshot_index})")
        out: list[Entry] = []
        size = 0
        for e in self.entries[start:stop]:
            size += len(e.data) + 24
            if out and size > max_bytes:
                break
            out.append(e)
        return out

    def unstable(self) -> list[Entry]:
        return self.entries[self.stable - self.snapshot_index :]

    def next_committed(self) -> list[Entry]:
        """Committed entries not yet handed to the application."""
        lo = self.applied - self.snapshot_index
        hi = self.committed - self.snapshot_index
        return self.entries[lo:hi] if hi > lo else []

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest (i, term(i)) with i <= index and term(i) <= term.

        Terms never decrease along a log, so this is a binary search. Used for
        fast backtracking: a whole conflicting term is skipped in one round.
        """
        index = min(index, self.last_index)
        if index <= self.snapshot_index:
            return index, self.snapshot_term if index == self.snapshot_index else 0
        hi = index - self.snapshot_index  # entries[:hi] are candidates
        terms = _TermView(self.entries)
        pos = bisect.bisect_right(terms, term, 0, hi)  # first position with term > `term`
        if pos == 0:
            return self.snapshot_index, self.snapshot_term
        return self.snapshot_index + pos, self.entries[pos - 1].term

    # -- writing ---------------------------------------------------------
    def append(self, entries: Sequence[Entry]) -> None:
        """Append, discarding our suffix from entries[0].index on."""
        if not entries:
            return
        first = entries[0].index
        # invariant: committed entries are never overwritten (log matching + commit rule)
        if first <= self.committed:
            raise AssertionError(f"append at {first} would overwrite committed entry (commit {self.committed})")
        if first > self.last_index + 1:
            raise AssertionError(f"append at {first} leaves a gap after {self.last_index}")
        del self.entries[first - self.snapshot_index - 1 :]
        self.entries.extend(entries)
        self.stable = min(self.stable, first - 1)
        confs = self._confs
        while confs[-1][0] >= first:  # a truncated CONF entry: back to the one before it
            confs.pop()  # (never the base: first > committed >= snapshot_index)
        self._note_confs(entries)

    def maybe_append(self, prev_index: int, prev_term: int, committed: int, entries: Sequence[Entry]) -> int | None:
        """The follower's AppendEntries consistency check and merge.

        Returns the index of the last entry now known to match the leader, or
        None when (prev_index, prev_term) does not match our log.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self._find_conflict(entries)
        if conflict:
            self.append(entries[conflict - prev_index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    def _find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry that is new or disagrees with ours, or 0."""
        for e in entries:
            if e.index <= self.snapshot_index:
                continue
            if self.term(e.index) != e.term:
                return e.index
        return 0

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index:
                raise AssertionError(f"commit {index} is past the last entry {self.last_index}")
            self.committed = index

    def stable_to(self, index: int, term: int) -> None:
        # An entry persisted by the driver may have been replaced meanwhile; only
        # an entry with the same (index, term) is the one that reached disk.
        if self.term(index) == term and index > self.stable:
            self.stable = index

    def applied_to(self, index: int) -> None:
        # invariant: applied <= committed, and applied only moves forward
        if index > self.committed:
            raise AssertionError(f"applied {index} past commit {self.committed}")
        if index > self.applied:
            self.applied = index

    def compact(self, index: int, term: int) -> None:
        """Forget entries up to `index`: the application's snapshot covers them."""
        if index <= self.snapshot_index:
            return
        if index > self.applied:
            raise AssertionError(f"compact at {index} past applied {self.applied}")
        base = self.conf_at(index)
        self._base_recorded = self._base_recorded or any(0 < i <= index for i, _ in self._confs[1:])
        del self.entries[: index - self.snapshot_index]
        self.snapshot_index, self.snapshot_term = index, term
        # invariant: snapshot_index <= stable (the snapshot is durable before it is used)
        self.stable = max(self.stable, index)
        self._confs = [(index, base)] + [c for c in self._confs if c[0] > index]

    def restore(self, index: int, term: int, conf: Membership | None = None) -> bool:
        """Install a leader's snapshot covering the log up to (index, term).

        Raft paper, figure 13: when our entry at `index` has the snapshot's
        term, log matching says everything up to it agrees, so only that
        prefix goes and later entries stay; otherwise the whole log goes.
        Either way the snapshot's entries count as committed and applied (the
        application restores its state machine from the snapshot), and
        `conf` (the snapshot's configuration; None: keep the latest one) is
        the configuration at `index`.

        Returns:
            True when entries after `index` were kept.
        """
        # invariant: a snapshot never rolls back what we know is committed
        if index <= self.committed:
            raise AssertionError(f"restore at {index} is not past commit {self.committed}")
        keep = self.match_term(index, term)
        if conf is None:
            conf = self.conf_at(index) if keep else self.conf
        else:
            self._base_recorded = True
        if keep:
            del self.entries[: index - self.snapshot_index]
            self._confs = [(index, conf)] + [c for c in self._confs if c[0] > index]
        else:
            self.entries = []
            self._confs = [(index, conf)]
        self.snapshot_index, self.snapshot_term = index, term
        self.committed = self.applied = index
        self.stable = max(self.stable, index) if keep else index
        return keep


class _TermView:
    """A read-only sequence of the entries' terms, for bisect without copying."""

    __slots__ = ("_entries",)

    def __init__(self, entries: list[Entry]) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i: int) -> int:
        return self._entries[i].term
