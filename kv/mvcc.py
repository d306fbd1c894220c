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

Every key with any history sits in `_keys`, a sorted list (bisect), so a
single-key read is a dict lookup plus, for an old revision, a bisect of that
key's history, and a range over k keys costs O(log n + k) plus the tombstoned
keys in it that compaction has not yet removed.

`compact(R)` forgets history nobody can ask for any more: for each key, every
record older than its newest record at or below R, and that newest record too
if it is a tombstone. Reads at revision >= R stay exact; reads below R raise
Compacted. Events (`changes_since`) are derived from the same histories, so
events after R are exact, and those at or below R are gone.

Nothing here reads a clock, draws a random number or depends on anything but
the calls made, in order: two stores given the same calls are identical.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Literal

from kv.errors import Compacted, FutureRevision, InvalidRequest
from kv.responses import KeyValue

__all__ = ["MVCCStore", "Event", "Record", "record_to_kv"]

# Indices into a record tuple.
MOD, SUB, CREATE, VERSION, VALUE, LEASE = range(6)
Record = tuple  # (mod_revision, sub, create_revision, version, value, lease)
_RECORD_WIDTH = 6
_mod_of = itemgetter(MOD)

# The range end that means "no upper bound" (etcd's convention).
UNBOUNDED = b"\0"


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


def record_to_kv(key: bytes | str, rec: Record) -> KeyValue:
    """Build the public KeyValue of a live record (key given in its final type)."""
    return KeyValue(key, rec[VALUE], rec[CREATE], rec[MOD], rec[VERSION], rec[LEASE])


class MVCCStore:
    """Multi-version store of bytes keys to bytes|str values, with history.

    Writes made between `begin()` and `end()` share one revision; a write made
    outside begin/end is its own revision. Reads at revision 0 see the latest
    state, including the writes of an open begin/end group.
    """

    def __init__(self) -> None:
        # invariant: _keys is sorted and holds exactly the keys of _index
        self._keys: list[bytes] = []
        # invariant: every history is non-empty and strictly increasing in MOD
        self._index: dict[bytes, list[Record]] = {}
        # invariant: revision >= 1, compact_revision <= revision, both only increase
        self.revision = 1
        self.compact_revision = 0
        self._txn_rev = 0  # the revision being written by an open group, else 0
        self._sub = 0  # next sub-revision within the open group

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
        self._txn_rev = 0
        self._sub = 0
        return self.revision

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
        keys = self._keys
        lo = bisect_left(keys, key)
        if range_end == UNBOUNDED:
            hi = len(keys)
        else:
            if range_end <= key:
                return []
            hi = bisect_left(keys, range_end, lo)
        index = self._index
        out = []
        if revision:
            for k in keys[lo:hi]:
                hist = index[k]
                i = bisect_right(hist, revision, key=_mod_of) - 1
                if i >= 0 and hist[i][VERSION]:
                    out.append((k, hist[i]))
        else:
            for k in keys[lo:hi]:
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
            insort(self._keys, key)
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
        for k, rec in live:
            if rec[MOD] == rev:
                raise RuntimeError(f"key {k!r} written twice at revision {rev}")
            index[k].append((rev, sub, 0, 0, None, 0))
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
        emptied = False
        for k in self._keys:
            hist = index[k]
            if hist[0][MOD] > revision:
                continue
            i = bisect_right(hist, revision, key=_mod_of) - 1
            if hist[i][VERSION]:
                if i:
                    del hist[:i]
            else:
                del hist[: i + 1]
                if not hist:
                    del index[k]
                    emptied = True
        if emptied:
            self._keys = [k for k in self._keys if k in index]
        self.compact_revision = revision

    # --- events -----------------------------------------------------------------

    def changes_since(self, revision: int, key: bytes, range_end: bytes | None = None) -> list[Event]:
        """Every change to the keys of the range at or after revision, in the
        order they were applied (by revision, then within a txn).

        Args:
            revision: the first revision wanted (>= 1).
            key, range_end: the range, conventions as for range_items.

        Raises:
            InvalidRequest: revision < 1.
            Compacted: revision <= compact_revision: changes at and below the
                compaction point are gone (compact_revision + 1 is the oldest
                revision a watch can start from).
        """
        if revision < 1:
            raise InvalidRequest(f"changes_since needs a revision >= 1, got {revision}")
        if self.compact_revision and revision <= self.compact_revision:
            raise Compacted(
                f"changes at revision {revision} have been compacted; watch from revision "
                f"{self.compact_revision + 1} or later",
                self.compact_revision,
            )
        if range_end is None:
            keys = [key] if key in self._index else []
        else:
            lo = bisect_left(self._keys, key)
            if range_end == UNBOUNDED:
                keys = self._keys[lo:]
            elif range_end <= key:
                keys = []
            else:
                keys = self._keys[lo : bisect_left(self._keys, range_end, lo)]
        found: list[tuple[int, int, Event]] = []
        current = self.revision
        for k in keys:
            hist = self._index[k]
            i = bisect_left(hist, revision, key=_mod_of)
            for j in range(i, len(hist)):
                rec = hist[j]
                if rec[MOD] > current:  # an open group's writes are not events yet
                    break
                prev = hist[j - 1] if j else None
                prev_kv = record_to_kv(k, prev) if prev is not None and prev[VERSION] else None
                if rec[VERSION]:
                    ev = Event("put", rec[MOD], record_to_kv(k, rec), prev_kv)
                else:
                    ev = Event("delete", rec[MOD], KeyValue(k, b"", 0, rec[MOD], 0, 0), prev_kv)
                found.append((rec[MOD], rec[SUB], ev))
        found.sort(key=lambda t: (t[0], t[1]))
        return [ev for _, _, ev in found]

    # --- snapshot ---------------------------------------------------------------

    def to_plain(self) -> list[Any]:
        """The whole store as a plain value (keys in order: deterministic)."""
        if self._txn_rev:
            raise RuntimeError("cannot snapshot inside a write group")
        flat: list[Any] = []
        index = self._index
        for k in self._keys:
            records: list[Any] = []
            for rec in index[k]:
                records.extend(rec)
            flat.append(k)
            flat.append(records)
        return [self.revision, self.compact_revision, flat]

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
            store._keys = keys
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidRequest):
                raise
            raise InvalidRequest(f"malformed store snapshot: {exc}") from None
        return store
