"""The multi-version key-value store (MVCC), as etcd keeps it.

Theory of operation
-------------------
The store has one cluster-wide `revision`, starting at 1 on an empty store.
Each write request that changes something (a put, a delete that deletes at
least one key, a txn with such writes) takes the next revision; every key it
touches records that revision as its mod_revision. Inside one write request
the individual changes are ordered by a sub-revision (kept so that events of
one txn replay in the order they happened; not otherwise visible).

Per key we keep its history: a list of records ordered by revision. A record
is a plain tuple, for speed and memory:

    (mod_revision, sub, create_revision, version, value, lease)

A delete appends a tombstone: version 0, value None, create 0, lease 0. The
next put after a tombstone starts a new incarnation: version 1 and
create_revision = its own revision.

Every key with any history sits in `_keys`, a chunked sorted set
(`kv.sortedkeys`: an insert costs O(log n + 1000), not a move of the whole
list), so a
single-key read is a dict lookup plus, for an old revision, a bisect of that
key's history, and a range over k keys costs O(log n + k) plus the tombstoned
keys in it that compaction has not yet removed.

`compact(R)` forgets history nobody can ask for any more: for each key, every
record older than its newest record at or below R, and that newest record too
if it is a tombstone. Reads at revision >= R stay exact; reads below R raise
Compacted. Events (`changes_since`) are derived from the same histories, so
events after R are exact, and those at or below R are gone.

Events are found one of two ways, with the same result. A full scan walks the
history of every key in the range: O(keys in range). For watchers that tail
the store, the store also keeps a changelog: (revision, sub, key) of every
change of the last `changelog_size` changes or so, in order, trimmed only at
revision boundaries. Events since a revision the changelog still covers are
then O(log n + changes since) to find. The changelog is a cache, rebuilt from
nothing: it is not in `to_plain()`, and a store restored from a snapshot
starts with an empty one (older start revisions fall back to the scan).

Nothing here reads a clock, draws a random number or depends on anything but
the calls made, in order: two stores given the same calls are identical.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Callable, Iterator, Literal

from kv.errors import Compacted, FutureRevision, InvalidRequest
from kv.responses import KeyValue
from kv.sortedkeys import SortedKeys

__all__ = ["MVCCStore", "Event", "Record", "record_to_kv"]

# Indices into a record tuple.
MOD, SUB, CREATE, VERSION, VALUE, LEASE = range(6)
Record = tuple  # (mod_revision, sub, create_revision, version, value, lease)
_RECORD_WIDTH = 6
_mod_of = itemgetter(MOD)

# The range end that means "no upper bound" (etcd's convention).
UNBOUNDED = b"\0"

# Changelog entries kept for tailing watchers (about 5 MiB at most).
DEFAULT_CHANGELOG_SIZE = 65_536


@dataclass(frozen=True, slots=True)
class Event:
    """One change to one key: what a watch delivers.

    Attributes:
        type: 'put' or 'delete'.
        revision: the revision of the change.
        kv: the pair after a put; for a delete, the key with mod_revision =
            revision and everything else zero/empty.
        prev_kv: the pair just before the change, or None if the key did not
            exist.
    """

    type: Literal["put", "delete"]
    revision: int
    kv: KeyValue
    prev_kv: KeyValue | None

    # etcd clients read these straight off the event.
    @property
    def key(self) -> bytes | str:
        """The changed key."""
        return self.kv.key

    @property
    def value(self) -> bytes | str:
        """The value after a put; empty for a delete."""
        return self.kv.value

    @property
    def mod_revision(self) -> int:
        """The revision of the change (equal to `revision`)."""
        return self.kv.mod_revision

    @property
    def create_revision(self) -> int:
        """The create revision of the key after a put; 0 for a delete."""
        return self.kv.create_revision

    @property
    def version(self) -> int:
        """The key's version after a put; 0 for a delete."""
        return self.kv.version

    @property
    def lease(self) -> int:
        """The lease attached by a put; 0 for a delete or no lease."""
        return self.kv.lease


def record_to_kv(key: bytes | str, rec: Record) -> KeyValue:
    """Build the public KeyValue of a live record (key given in its final type)."""
    return KeyValue(key, rec[VALUE], rec[CREATE], rec[MOD], rec[VERSION], rec[LEASE])


class _FrozenView:
    """Histories that compaction replaced while a frozen view was being built."""

    __slots__ = ("saved",)

    def __init__(self) -> None:
        self.saved: dict[bytes, list] = {}


class MVCCStore:
    """Multi-version store of bytes keys to bytes|str values, with history.

    Writes made between `begin()` and `end()` share one revision; a write made
    outside begin/end is its own revision. Reads at revision 0 see the latest
    state, including the writes of an open begin/end group.

    Args:
        changelog_size: about how many recent changes to remember for fast
            event lookups (trimmed at revision boundaries; 0 disables it).
            Not part of the state: it changes no result, only the cost.
    """

    def __init__(self, changelog_size: int = DEFAULT_CHANGELOG_SIZE) -> None:
        # invariant: _keys is sorted and holds exactly the keys of _index
        self._keys = SortedKeys()
        # invariant: every history is non-empty and strictly increasing in MOD
        self._index: dict[bytes, list[Record]] = {}
        # invariant: revision >= 1, compact_revision <= revision, both only increase
        self.revision = 1
        self.compact_revision = 0
        self._txn_rev = 0  # the revision being written by an open group, else 0
        self._sub = 0  # next sub-revision within the open group
        # Frozen views being built (see freeze): compaction saves the
        # histories it replaces or drops into each, before replacing them.
        self._views: list[_FrozenView] = []
        self._views_lock = threading.Lock()  # build() removes its view from another thread
        # The changelog: (revision, sub, key) of recent changes in applied order;
        # entries before _log_head are dead (dropped in bulk, amortised O(1)).
        # invariant: _log[_log_head:] holds every change with revision >= _log_start
        self._log: list[tuple[int, int, bytes]] = []
        self._log_head = 0
        self._log_start = 1  # a new store's changelog has seen everything
        self._log_size = changelog_size

    # --- write groups ---------------------------------------------------------

    def begin(self) -> None:
        """Open a write group: the writes until `end()` share one revision."""
        if self._txn_rev:
            raise RuntimeError("write group already open")
        self._txn_rev = self.revision + 1
        self._sub = 0

    def end(self) -> int:
        """Close the write group; return the store revision afterwards (bumped
        by one if anything was written, unchanged otherwise)."""
        if self._sub:
            self.revision = self._txn_rev
            if len(self._log) - self._log_head > self._log_size:
                self._trim_log(len(self._log) - self._log_size)
        self._txn_rev = 0
        self._sub = 0
        return self.revision

    def _trim_log(self, upto: int) -> None:
        """Drop changelog entries before position `upto`, and the rest of the
        last dropped entry's revision (the changelog keeps whole revisions)."""
        log = self._log
        if upto <= self._log_head:
            return
        upto = min(upto, len(log))
        last = log[upto - 1][0]
        while upto < len(log) and log[upto][0] == last:
            upto += 1
        self._log_start = last + 1
        self._log_head = upto
        if upto > 1024 and upto * 2 > len(log):
            del log[:upto]
            self._log_head = 0

    @property
    def pending_revision(self) -> int:
        """The revision the open group writes at (0 if no group is open)."""
        return self._txn_rev

    # --- reads ----------------------------------------------------------------

    def check_revision(self, revision: int) -> int:
        """Resolve a requested read revision.

        Args:
            revision: 0 (or negative) for the latest state, else a revision.

        Returns:
            0 for "latest", or the revision to read at.

        Raises:
            Compacted: revision is below the compaction point.
            FutureRevision: revision is above the current revision.
        """
        if revision <= 0:
            return 0
        if revision < self.compact_revision:
            raise Compacted(
                f"revision {revision} has been compacted; the oldest readable revision "
                f"is {self.compact_revision}",
                self.compact_revision,
            )
        if revision > self.revision:
            raise FutureRevision(
                f"revision {revision} is newer than the current revision {self.revision}; "
                "wait for it or read at revision 0 (latest)"
            )
        if revision == self.revision and not self._txn_rev:
            return 0  # same answer, cheaper path
        return revision

    def get_record(self, key: bytes, revision: int = 0) -> Record | None:
        """The live record of key at revision (0: latest), or None. Unchecked:
        call check_revision first."""
        hist = self._index.get(key)
        if hist is None:
            return None
        if revision:
            i = bisect_right(hist, revision, key=_mod_of) - 1
            if i < 0:
                return None
            rec = hist[i]
        else:
            rec = hist[-1]
        return rec if rec[VERSION] else None

    def range_items(self, key: bytes, range_end: bytes | None, revision: int = 0) -> list[tuple[bytes, Record]]:
        """Live (key, record) pairs in the range, in ascending key order.

        Args:
            key, range_end: range_end None for the single key; UNBOUNDED
                (b"\\0") for every key >= key; else the exclusive end.
            revision: as returned by check_revision (0: latest).
        """
        if range_end is None:
            rec = self.get_record(key, revision)
            return [] if rec is None else [(key, rec)]
        if range_end != UNBOUNDED and range_end <= key:
            return []
        keys = self._keys.irange(key, None if range_end == UNBOUNDED else range_end)
        index = self._index
        out = []
        if revision:
            for k in keys:
                hist = index[k]
                i = bisect_right(hist, revision, key=_mod_of) - 1
                if i >= 0 and hist[i][VERSION]:
                    out.append((k, hist[i]))
        else:
            for k in keys:
                rec = index[k][-1]
                if rec[VERSION]:
                    out.append((k, rec))
        return out

    def get(self, key: bytes, revision: int = 0) -> KeyValue | None:
        """The pair stored under key at revision (0: latest), or None.

        Raises:
            Compacted, FutureRevision: see check_revision.
        """
        rec = self.get_record(key, self.check_revision(revision))
        return None if rec is None else record_to_kv(key, rec)

    def range(self, key: bytes, range_end: bytes | None = None, revision: int = 0) -> list[KeyValue]:
        """The pairs in the range at revision (0: latest), ascending by key.

        Raises:
            Compacted, FutureRevision: see check_revision.
        """
        items = self.range_items(key, range_end, self.check_revision(revision))
        return [record_to_kv(k, rec) for k, rec in items]

    # --- writes ---------------------------------------------------------------

    def put(self, key: bytes, value: bytes | str, lease: int = 0) -> Record | None:
        """Write key = value. Returns the previous live record, or None."""
        auto = not self._txn_rev
        if auto:
            self.begin()
        rev, sub = self._txn_rev, self._sub
        self._sub = sub + 1
        hist = self._index.get(key)
        if hist is None:
            self._index[key] = [(rev, sub, rev, 1, value, lease)]
            self._keys.add(key)
            prev = None
        else:
            prev = hist[-1]
            if prev[MOD] == rev:
                raise RuntimeError(f"key {key!r} written twice at revision {rev}")
            if prev[VERSION]:
                hist.append((rev, sub, prev[CREATE], prev[VERSION] + 1, value, lease))
            else:
                hist.append((rev, sub, rev, 1, value, lease))
                prev = None
        self._log.append((rev, sub, key))
        if auto:
            self.end()
        return prev

    def delete_range(self, key: bytes, range_end: bytes | None = None) -> list[tuple[bytes, Record]]:
        """Delete the live keys of the range. Returns their (key, previous
        record) pairs in key order; takes a revision only if it deleted any."""
        live = self.range_items(key, range_end)
        if not live:
            return live
        auto = not self._txn_rev
        if auto:
            self.begin()
        rev, sub = self._txn_rev, self._sub
        index = self._index
        log = self._log
        for k, rec in live:
            if rec[MOD] == rev:
                raise RuntimeError(f"key {k!r} written twice at revision {rev}")
            index[k].append((rev, sub, 0, 0, None, 0))
            log.append((rev, sub, k))
            sub += 1
        self._sub = sub
        if auto:
            self.end()
        return live

    def compact(self, revision: int) -> None:
        """Discard history below revision (see the module docstring).

        Raises:
            Compacted: revision is at or below the current compaction point.
            FutureRevision: revision is above the current revision.
        """
        if self._txn_rev:
            raise RuntimeError("cannot compact inside a write group")
        if revision <= self.compact_revision:
            raise Compacted(
                f"revision {revision} is already compacted (compacted at {self.compact_revision})",
                self.compact_revision,
            )
        if revision > self.revision:
            raise FutureRevision(
                f"cannot compact at revision {revision}, newer than the current revision {self.revision}"
            )
        index = self._index
        with self._views_lock:
            views = list(self._views)
        emptied = False
        for k in self._keys:
            hist = index[k]
            if hist[0][MOD] > revision:
                continue
            i = bisect_right(hist, revision, key=_mod_of) - 1
            # New lists, never `del hist[:i]`, and the old one handed to any
            # frozen view first: a snapshot being built on another thread
            # reads the histories as they were when it was frozen.
            if hist[i][VERSION] and not i:
                continue
            for view in views:
                view.saved.setdefault(k, hist)
            if hist[i][VERSION]:
                if i:
                    index[k] = hist[i:]
            elif i + 1 < len(hist):
                index[k] = hist[i + 1 :]
            else:
                del index[k]
                emptied = True
        if emptied:
            self._keys = SortedKeys([k for k in self._keys if k in index])
        self.compact_revision = revision
        # Changes at or below the compaction point can no longer be asked for.
        log = self._log
        self._trim_log(bisect_left(log, (revision + 1,), lo=self._log_head))
        self._log_start = max(self._log_start, revision + 1)

    # --- events -----------------------------------------------------------------

    def changes_since(self, revision: int, key: bytes, range_end: bytes | None = None, *,
                      prev_kv: bool = True, scan: bool = False) -> list[Event]:
        """Every change to the keys of the range at or after revision, in the
        order they were applied (by revision, then within a txn).

        Args:
            revision: the first revision wanted (>= 1).
            key, range_end: the range, conventions as for range_items.
            prev_kv: fill each event's prev_kv (else it is None).
            scan: always walk the key histories, never the changelog (the two
                give the same events; for tests and debugging).

        Raises:
            InvalidRequest: revision < 1.
            Compacted: revision <= compact_revision: changes at and below the
                compaction point are gone (compact_revision + 1 is the oldest
                revision a watch can start from).
        """
        return list(self.iter_changes(revision, key, range_end, prev_kv=prev_kv, scan=scan))

    def iter_changes(self, revision: int, key: bytes, range_end: bytes | None = None, *,
                     prev_kv: bool = True, scan: bool = False) -> Iterator[Event]:
        """`changes_since` as an iterator, for callers that may stop early.

        The errors are raised by this call, not by the iteration. Consume the
        iterator before the store changes again (nothing checks that).
        """
        self.check_watch_revision(revision)
        if range_end is None:
            return self._key_changes(revision, key, prev_kv)  # one history: always cheap
        if not scan and revision >= self._log_start:
            log_pos = bisect_left(self._log, (revision,), lo=self._log_head)
            in_range = self._keys.count_range(key, None if range_end == UNBOUNDED else range_end)
            # The scan costs a bisect per key of the range; the changelog a
            # comparison per change since `revision`. Take the cheaper.
            if in_range * 8 >= len(self._log) - log_pos:
                return self._log_changes(log_pos, key, range_end, prev_kv)
        return iter(self._scan_changes(revision, key, range_end, prev_kv))

    def check_watch_revision(self, revision: int) -> None:
        """Check that changes from `revision` on can still be listed.

        Raises:
            InvalidRequest: revision < 1 (or not an int).
            Compacted: revision <= compact_revision.
        """
        if type(revision) is not int or revision < 1:
            raise InvalidRequest(f"events start at a revision >= 1, got {revision!r}")
        if self.compact_revision and revision <= self.compact_revision:
            raise Compacted(
                f"changes at revision {revision} have been compacted (the store is compacted at revision "
                f"{self.compact_revision}); watch from revision {self.compact_revision + 1} or later",
                self.compact_revision,
            )

    def _event(self, k: bytes, hist: list[Record], j: int, prev_kv: bool) -> Event:
        """The event of record hist[j] of key k."""
        rec = hist[j]
        prev = None
        if prev_kv and j:
            p = hist[j - 1]
            if p[VERSION]:
                prev = record_to_kv(k, p)
        if rec[VERSION]:
            return Event("put", rec[MOD], record_to_kv(k, rec), prev)
        return Event("delete", rec[MOD], KeyValue(k, b"", 0, rec[MOD], 0, 0), prev)

    def _key_changes(self, revision: int, key: bytes, prev_kv: bool) -> Iterator[Event]:
        hist = self._index.get(key)
        if hist is None:
            return
        current = self.revision
        for j in range(bisect_left(hist, revision, key=_mod_of), len(hist)):
            if hist[j][MOD] > current:  # an open group's writes are not events yet
                return
            yield self._event(key, hist, j, prev_kv)

    def _log_changes(self, pos: int, key: bytes, range_end: bytes, prev_kv: bool) -> Iterator[Event]:
        log, index, current = self._log, self._index, self.revision
        unbounded = range_end == UNBOUNDED
        for j in range(pos, len(log)):
            rev, _, k = log[j]
            if rev > current:
                return
            if k < key or (not unbounded and k >= range_end):
                continue
            hist = index[k]
            # invariant: a changelog entry's record survives compaction (rev > compact_revision)
            yield self._event(k, hist, bisect_left(hist, rev, key=_mod_of), prev_kv)

    def _scan_changes(self, revision: int, key: bytes, range_end: bytes, prev_kv: bool) -> list[Event]:
        keys = self._keys.irange(key, None if range_end == UNBOUNDED else range_end)
        found: list[tuple[int, int, Event]] = []
        current = self.revision
        for k in keys:
            hist = self._index[k]
            for j in range(bisect_left(hist, revision, key=_mod_of), len(hist)):
                rec = hist[j]
                if rec[MOD] > current:  # an open group's writes are not events yet
                    break
                found.append((rec[MOD], rec[SUB], self._event(k, hist, j, prev_kv)))
        found.sort(key=lambda t: (t[0], t[1]))
        return [ev for _, _, ev in found]

    # --- snapshot ---------------------------------------------------------------

    def __len__(self) -> int:
        """Keys with a history (deleted ones too, until compaction drops them)."""
        return len(self._index)

    def to_plain(self) -> list[Any]:
        """The whole store as a plain value (keys in order: deterministic)."""
        return self.freeze()()

    def freeze(self) -> Callable[[], list[Any]]:
        """Fix the store's current state cheaply (a copy of the sorted key
        index, O(keys / 1000)) and return a function that builds `to_plain()`
        of that state. The function may run on another thread while this
        store keeps changing: histories are only appended to (records newer
        than the frozen revision are skipped), and compaction, the only thing
        that replaces or drops a history, first saves the old one into every
        view still being built. Call the function once.
        """
        if self._txn_rev:
            raise RuntimeError("cannot snapshot inside a write group")
        view = _FrozenView()
        with self._views_lock:
            self._views.append(view)
        revision, compact_revision = self.revision, self.compact_revision
        index, saved = self._index, view.saved
        keys = self._keys.copy()

        def build() -> list[Any]:
            try:
                flat: list[Any] = []
                for k in keys:
                    # Live first, then saved: compaction saves before it replaces,
                    # so whichever order the two threads interleave in, a history
                    # replaced after this point is found in `saved`.
                    hist = index.get(k)
                    hist = saved.get(k, hist)
                    records: list[Any] = []
                    for rec in hist:  # type: ignore[union-attr]
                        if rec[MOD] > revision:
                            break
                        records.extend(rec)
                    flat.append(k)
                    flat.append(records)
                return [revision, compact_revision, flat]
            finally:
                with self._views_lock:
                    if view in self._views:
                        self._views.remove(view)

        return build

    @classmethod
    def from_plain(cls, plain: list[Any]) -> MVCCStore:
        """Rebuild a store from `to_plain()` output.

        Raises:
            InvalidRequest: plain is not a store's plain form.
        """
        store = cls()
        try:
            revision, compact_revision, flat = plain
            store.revision = revision
            store.compact_revision = compact_revision
            keys = flat[0::2]
            histories = flat[1::2]
            for k, records in zip(keys, histories):
                if type(k) is not bytes or len(records) % _RECORD_WIDTH or not records:
                    raise InvalidRequest("malformed store snapshot: bad key history")
                it = iter(records)
                store._index[k] = list(zip(it, it, it, it, it, it))
            if len(store._index) != len(keys) or any(a >= b for a, b in zip(keys, keys[1:])):
                raise InvalidRequest("malformed store snapshot: keys not strictly ascending")
            store._keys = SortedKeys(keys)
            store._log_start = revision + 1  # the changelog starts empty, after the snapshot
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidRequest):
                raise
            raise InvalidRequest(f"malformed store snapshot: {exc}") from None
        return store
