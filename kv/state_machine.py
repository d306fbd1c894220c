"""The replicated key-value state machine that every Raft replica applies.

Theory of operation
-------------------
The leader packs client commands into a batch (`encode_batch`) together with
its clock reading `now`, and proposes the batch as the data of one log entry.
Once the entry is committed, every replica calls
`KVStateMachine.apply(index, term, data)`, which decodes the batch and
applies each command in order, returning one result per command: a response,
or the typed error instance the command failed with. Errors are returned,
never raised, because they are part of the replicated outcome: every replica
reaches the same one.

Applying is deterministic. The only inputs are the entry's index, term and
bytes; time enters only as the `now` inside the batch, made monotonic here
(a new leader's clock may be behind the old one's); nothing depends on hash
or set order. So replicas that applied the same entries hold identical state
and produce byte-identical `snapshot()`s, which the tests check.

Each command goes through:
1. its session (`kv.sessions`), for exactly-once: a retried command is
   answered from memory instead of being applied twice;
2. validation (`kv.validation.validate`), with the limits of this replica
   (which must be the same on every replica);
3. the handler for its request type (the `_HANDLERS` table), which works on
   the MVCC store (`kv.mvcc`).

A Txn is checked completely before it writes anything: the duplicate-key rule
(validation), every compare (against the store before the txn, nested txns
included, as etcd does), and the preconditions of the ops on the chosen path
(range revisions not compacted nor in the future, keys that ignore_value /
ignore_lease puts need). So a txn either applies completely or not at all.

The batch format (what a log entry's data holds) is in `kv.batch`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Iterator

import structlog

from kv.batch import BATCH_FORMAT_V1, Command, decode_batch, decode_slots, encode_batch
from kv.codec import decode, encode
from kv.errors import CodecError, InvalidRequest, KeyNotFound, LeaseNotFound, RaftKVError
from kv.leases import LeaseTable
from kv.limits import DEFAULT_LIMITS, Limits
from kv.mvcc import CREATE, LEASE, MOD, VALUE, VERSION, Event, MVCCStore, Record
from kv.requests import (
    Compact,
    Compare,
    DeleteRange,
    LeaseCheckpoint,
    LeaseExpire,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRevoke,
    Put,
    Range,
    Txn,
    key_bytes,
)
from kv.responses import (
    CompactResponse,
    DeleteRangeResponse,
    KeyValue,
    LeaseCheckpointResponse,
    LeaseGrantResponse,
    LeaseKeepAliveResponse,
    LeaseRevokeResponse,
    PutResponse,
    RangeResponse,
    ResponseHeader,
    TxnResponse,
    result_from_plain,
    result_to_plain,
)
from kv.sessions import SessionTable
from kv.validation import range_bounds, validate

# Command, encode_batch and decode_batch live in kv.batch; re-exported here.
__all__ = ["Command", "KVStateMachine", "encode_batch", "decode_batch", "BATCH_FORMAT_V1", "SNAPSHOT_FORMAT"]

log = structlog.get_logger(__name__)

# 2: leases added (format 1 was never written to disk: snapshots came later).
SNAPSHOT_FORMAT = 3  # 3 added the highest replica id ever a member; 2 is still read
_SNAPSHOT_MAGIC = "raftkv.kv"


def _clean(exc: RaftKVError) -> RaftKVError:
    """Drop traceback and chained exceptions: results are kept (sessions) and
    must not pin stack frames."""
    exc.__traceback__ = None
    exc.__context__ = None
    exc.__cause__ = None
    return exc


def _out_key(request_key: Any, key: bytes) -> bytes | str:
    """A stored key in the type of the request's key."""
    if type(request_key) is bytes:
        return key
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key


def _compare_holds(c: Compare, rec: Record | None) -> bool:
    target = c.target
    if target == "value":
        a = rec[VALUE] if rec is not None else b""
        a = a if type(a) is bytes else a.encode("utf-8")
        b = c.operand if type(c.operand) is bytes else c.operand.encode("utf-8")
    else:
        a = 0 if rec is None else rec[_COMPARE_FIELD[target]]
        b = c.operand
    op = c.op
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b
    return a > b


_COMPARE_FIELD = {"version": VERSION, "create": CREATE, "mod": MOD, "lease": LEASE}


def _value_bytes(v: bytes | str) -> bytes:
    return v if type(v) is bytes else v.encode("utf-8")


_SORT_KEYS: dict[str, Callable[[tuple[bytes, Record]], Any]] = {
    "key": lambda item: item[0],
    "version": lambda item: item[1][VERSION],
    "create": lambda item: item[1][CREATE],
    "mod": lambda item: item[1][MOD],
    "value": lambda item: _value_bytes(item[1][VALUE]),
}


class KVStateMachine:
    """The deterministic key-value state machine driven by a Raft replica.

    Not thread-safe: one replica loop drives it.
    """

    # request type -> handler method name (locks and elections are client
    # recipes over Put, Txn and leases; they need no handler of their own)
    _HANDLERS: dict[type, str] = {
        Put: "_apply_put",
        Range: "_apply_range",
        DeleteRange: "_apply_delete_range",
        Txn: "_apply_txn",
        Compact: "_apply_compact",
        LeaseGrant: "_apply_lease_grant",
        LeaseRevoke: "_apply_lease_revoke",
        LeaseKeepAlive: "_apply_lease_keepalive",
        LeaseCheckpoint: "_apply_lease_checkpoint",
        LeaseExpire: "_apply_lease_expire",
    }

    def __init__(self, limits: Limits | None = None) -> None:
        """Create an empty state machine (revision 1, nothing applied).

        Args:
            limits: bounds to enforce; must be the same on every replica.
        """
        self.limits = limits if limits is not None else DEFAULT_LIMITS
        # invariant: applied_index only increases (restore may move it anywhere, by design)
        self.applied_index = 0
        self.applied_term = 0
        self._now = 0.0  # invariant: only increases
        self._store = MVCCStore()
        self._sessions = SessionTable(self.limits)
        self._leases = LeaseTable()
        # The highest Raft replica id ever in the configuration: a new replica
        # gets a higher one, so no id is ever used twice (a replica that lost
        # its data must not come back under its old identity).
        # invariant: only increases
        self.member_high = 0
        self._index = 0  # the index of the entry being applied
        self._handlers: dict[type, Callable[[Any, int], Any]] = {
            t: getattr(self, name) for t, name in self._HANDLERS.items()
        }

    # --- state ------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The store's current revision (1 when empty)."""
        return self._store.revision

    @property
    def compact_revision(self) -> int:
        """The revision history was compacted at (0: never)."""
        return self._store.compact_revision

    @property
    def now(self) -> float:
        """The latest clock reading applied from the log (monotonic)."""
        return self._now

    @property
    def store(self) -> MVCCStore:
        """The MVCC store (read-only use: watches, debugging)."""
        return self._store

    @property
    def leases(self) -> LeaseTable:
        """The lease table (read-only use: the leader's lease keeper, time-to-live queries)."""
        return self._leases

    @property
    def sessions(self) -> SessionTable:
        """The client session table (read-only use: debugging, tests)."""
        return self._sessions

    # --- applying the log -------------------------------------------------------

    def note_members(self, ids: Iterable[int]) -> None:
        """Record the replica ids of a configuration entry as it is applied
        (the replica calls this for every committed configuration entry, in
        log order, right after `apply` of that entry)."""
        self.member_high = max(self.member_high, *ids, 0)

    def apply(self, index: int, term: int, data: bytes) -> list[Any]:
        """Apply one committed log entry.

        Args:
            index: the entry's log index. An index at or below applied_index
                was applied already (replay after restart) and is ignored.
            term: the entry's term; it goes into every response header.
            data: an `encode_batch` result, or b"" for the leader's no-op entry.

        Returns:
            One result per command, in order: a response (PutResponse,
            RangeResponse, DeleteRangeResponse, TxnResponse, CompactResponse),
            or an error instance (InvalidRequest, RequestTooLarge, Compacted,
            FutureRevision, KeyNotFound, StaleRequest, SessionExpired, ...)
            for a command that failed; [] for an empty or already applied
            entry; [CodecError] if the batch itself cannot be decoded.
            Consistency: every replica returns the same results for the same
            entry, and a remembered command returns its first result again.

        Raises:
            Nothing for bad input; an exception escaping here is a bug.
        """
        if index <= self.applied_index:
            return []
        if index != self.applied_index + 1 and self.applied_index:
            log.debug("apply.index_gap", applied_index=self.applied_index, index=index)
        results: list[Any] = []
        if data:
            if type(data) is not bytes:
                data = bytes(data)
            try:
                now, slots = decode_slots(data)
            except CodecError as exc:
                log.warning("apply.bad_batch", index=index, term=term, error=str(exc))
                results.append(_clean(exc))
            else:
                if now > self._now and math.isfinite(now):
                    self._now = now  # a clock reading behind the latest is ignored
                now = self._now
                self._index = index
                sessions = self._sessions
                sessions.expire(now)
                execute = self._execute
                append = results.append
                for client_id, seq, ack, op, size in slots:
                    if isinstance(op, RaftKVError):
                        append(_clean(op))
                    elif not client_id:
                        append(execute(op, size, term))
                    else:
                        result = sessions.begin(client_id, seq, ack, now)
                        if result is None:
                            result = execute(op, size, term)
                            sessions.remember(client_id, seq, result)
                        elif isinstance(result, RaftKVError):
                            _clean(result)  # a remembered error may have been raised by a caller since
                        append(result)
        self.applied_index = index
        self.applied_term = term
        return results

    def _execute(self, op: Any, size: int, term: int) -> Any:
        handler = self._handlers.get(type(op))
        try:
            if handler is None:
                raise InvalidRequest(f"request type {type(op).__name__} cannot be applied")
            validate(op, self.limits, size=size)
            return handler(op, term)
        except RaftKVError as exc:
            return _clean(exc)

    def read(self, op: Range, raft_term: int) -> RangeResponse:
        """Serve a Range from local state, without the log.

        Consistency: serializable (this replica's applied state). It is
        linearizable when called after a ReadIndex round once applied_index
        has reached the read index.

        Args:
            op: the Range.
            raft_term: the replica's current term, for the header.

        Raises:
            InvalidRequest: op is not a valid Range.
            Compacted, FutureRevision: op.revision is unreadable.
        """
        if type(op) is not Range:
            raise InvalidRequest(f"read() serves Range requests only, got {type(op).__name__}")
        validate(op, self.limits, size=0)
        kvs, count, more = self._do_range(op)
        return RangeResponse(ResponseHeader(self._store.revision, raft_term), kvs, count, more)

    def changes_since(self, revision: int, key: bytes | str, range_end: bytes | str | None = None) -> list[Event]:
        """Events at or after revision for a key range (keys as bytes); see
        MVCCStore.changes_since. Raises Compacted and InvalidRequest."""
        start, end = range_bounds(key, range_end)
        return self._store.changes_since(revision, start, end)

    # --- handlers ----------------------------------------------------------------

    def _header(self, term: int) -> ResponseHeader:
        return ResponseHeader(self._store.revision, term)

    def _apply_put(self, op: Put, term: int) -> PutResponse:
        self._check_put(op)
        prev_kv = self._do_put(op)
        return PutResponse(ResponseHeader(self._store.revision, term), prev_kv)

    def _apply_range(self, op: Range, term: int) -> RangeResponse:
        kvs, count, more = self._do_range(op)
        return RangeResponse(ResponseHeader(self._store.revision, term), kvs, count, more)

    def _apply_delete_range(self, op: DeleteRange, term: int) -> DeleteRangeResponse:
        deleted, prev_kvs = self._do_delete(op)
        return DeleteRangeResponse(ResponseHeader(self._store.revision, term), deleted, prev_kvs)

    def _apply_compact(self, op: Compact, term: int) -> CompactResponse:
        self._store.compact(op.revision)
        log.info("kv.compacted", revision=op.revision)
        return CompactResponse(self._header(term))

    def _apply_lease_grant(self, op: LeaseGrant, term: int) -> LeaseGrantResponse:
        lease = self._leases.grant(op.ttl_ms, op.id, self._index)
        return LeaseGrantResponse(self._header(term), lease.id, lease.ttl_ms)

    def _apply_lease_keepalive(self, op: LeaseKeepAlive, term: int) -> LeaseKeepAliveResponse:
        lease = self._leases.renew(op.id, self._index)
        return LeaseKeepAliveResponse(self._header(term), lease.id, lease.ttl_ms)

    def _apply_lease_checkpoint(self, op: LeaseCheckpoint, term: int) -> LeaseCheckpointResponse:
        return LeaseCheckpointResponse(self._header(term), self._leases.checkpoint(op.remaining))

    def _apply_lease_revoke(self, op: LeaseRevoke, term: int) -> LeaseRevokeResponse:
        return self._end_lease(op.id, term)

    def _apply_lease_expire(self, op: LeaseExpire, term: int) -> LeaseRevokeResponse:
        lease = self._leases.require(op.id)
        if lease.epoch != op.epoch:
            # Renewed after the leader decided it had run out: it lives on.
            raise LeaseNotFound(f"lease {op.id} was renewed at index {lease.epoch}; expiry {op.epoch} is stale")
        log.info("kv.lease_expired", lease=op.id, keys=len(lease.keys))
        return self._end_lease(op.id, term)

    def _end_lease(self, lease_id: int, term: int) -> LeaseRevokeResponse:
        """Forget a lease and delete its keys, all at one revision."""
        lease = self._leases.remove(lease_id)
        store = self._store
        store.begin()
        try:
            for key in sorted(lease.keys):
                store.delete_range(key)
        finally:
            store.end()
        return LeaseRevokeResponse(self._header(term), lease_id, len(lease.keys))

    def _apply_txn(self, op: Txn, term: int) -> TxnResponse:
        path: list[bool] = []
        self._eval_compares(op, path)  # against the store before the txn
        self._check_path(op, iter(path))  # raises before anything is written
        store = self._store
        store.begin()
        try:
            raw = self._run_txn(op, iter(path))
        finally:
            revision = store.end()
        return _build(raw, ResponseHeader(revision, term))

    # --- txn machinery ---------------------------------------------------------------
    # `path` lists, depth first, whether each txn on the executed path took its
    # success branch; evaluation, checking and running walk it in the same order.

    def _eval_compares(self, txn: Txn, path: list[bool]) -> None:
        ok = all(self._compare(c) for c in txn.compare)
        path.append(ok)
        for op in txn.success if ok else txn.failure:
            if type(op) is Txn:
                self._eval_compares(op, path)

    def _compare(self, c: Compare) -> bool:
        start, end = range_bounds(c.key, c.range_end)
        items = self._store.range_items(start, end)
        if not items:
            # etcd: a value compare on a missing key is false whatever the op;
            # other targets compare against zero.
            return c.target != "value" and _compare_holds(c, None)
        return all(_compare_holds(c, rec) for _, rec in items)

    def _check_path(self, txn: Txn, path: Iterator[bool]) -> None:
        for op in txn.success if next(path) else txn.failure:
            t = type(op)
            if t is Range:
                self._store.check_revision(op.revision)
            elif t is Put:
                self._check_put(op)
            elif t is Txn:
                self._check_path(op, path)

    def _run_txn(self, txn: Txn, path: Iterator[bool]) -> tuple[Any, ...]:
        succeeded = next(path)
        raw: list[Any] = []
        for op in txn.success if succeeded else txn.failure:
            t = type(op)
            if t is Put:
                raw.append((PutResponse, (self._do_put(op),)))
            elif t is Range:
                raw.append((RangeResponse, self._do_range(op)))
            elif t is DeleteRange:
                raw.append((DeleteRangeResponse, self._do_delete(op)))
            else:
                raw.append(self._run_txn(op, path))
        return (TxnResponse, (succeeded, raw))

    # --- operations (no header: shared by single requests and txns) ------------------

    def _check_put(self, op: Put) -> None:
        if op.lease and op.lease not in self._leases:
            raise LeaseNotFound(f"lease {op.lease} does not exist (never granted, expired or revoked); "
                                "grant a new one")
        if (op.ignore_value or op.ignore_lease) and self._store.get_record(key_bytes(op.key)) is None:
            raise KeyNotFound(
                f"key {op.key!r} does not exist; ignore_value and ignore_lease need an existing key"
            )

    def _do_put(self, op: Put) -> KeyValue | None:
        key = key_bytes(op.key)
        value, lease = op.value, op.lease
        if op.ignore_value or op.ignore_lease:
            cur = self._store.get_record(key)
            assert cur is not None  # _check_put ran first
            if op.ignore_value:
                value = cur[VALUE]
            if op.ignore_lease:
                lease = cur[LEASE]
        prev = self._store.put(key, value, lease)
        old_lease = prev[LEASE] if prev is not None else 0
        if old_lease != lease:
            if old_lease:
                self._leases.detach(old_lease, key)
            if lease:
                self._leases.attach(lease, key)
        if prev is None or not op.prev_kv:
            return None
        return KeyValue(op.key, prev[VALUE], prev[CREATE], prev[MOD], prev[VERSION], prev[LEASE])

    def _do_range(self, op: Range) -> tuple[tuple[KeyValue, ...], int, bool]:
        store = self._store
        revision = store.check_revision(op.revision)
        start, end = range_bounds(op.key, op.range_end)
        items = store.range_items(start, end, revision)
        count = len(items)
        if op.count_only:
            return (), count, False
        order, target = op.sort_order, op.sort_target
        if order == "none" and target != "key":
            order = "ascend"  # as etcd: sorting by a field implies ascending
        if order == "descend" or (order == "ascend" and target != "key"):
            # stable: ties keep ascending key order, on every replica
            items.sort(key=_SORT_KEYS[target], reverse=order == "descend")
        more = False
        if op.limit and count > op.limit:
            items = items[: op.limit]
            more = True
        request_key = op.key
        keys_only = op.keys_only
        out = []
        for k, rec in items:
            value = rec[VALUE]
            if keys_only:
                value = b"" if type(value) is bytes else ""
            out.append(
                KeyValue(_out_key(request_key, k), value, rec[CREATE], rec[MOD], rec[VERSION], rec[LEASE])
            )
        return tuple(out), count, more

    def _do_delete(self, op: DeleteRange) -> tuple[int, tuple[KeyValue, ...]]:
        start, end = range_bounds(op.key, op.range_end)
        deleted = self._store.delete_range(start, end)
        for k, rec in deleted:
            if rec[LEASE]:
                self._leases.detach(rec[LEASE], k)
        if not op.prev_kv:
            return len(deleted), ()
        request_key = op.key
        prev_kvs = tuple(
            KeyValue(_out_key(request_key, k), rec[VALUE], rec[CREATE], rec[MOD], rec[VERSION], rec[LEASE])
            for k, rec in deleted
        )
        return len(deleted), prev_kvs

    # --- snapshots -----------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """`snapshot_plain()` encoded: the bytes a replica saves and sends."""
        return encode(self.snapshot_plain())

    def snapshot_plain(self) -> list[Any]:
        """The whole state as a plain value: store
        with history and compaction point,
        sessions with their remembered results, leases, applied index and
        term, clock.

        Consistency: deterministic; replicas that applied the same entries
        produce identical bytes. Limits are not included: configure every
        replica the same.
        """
        return self.snapshot_source()()

    def snapshot_source(self) -> Callable[[], list[Any]]:
        """Fix the current state cheaply and return a function that builds
        `snapshot_plain()` of it. The function may run on another thread
        while this state machine keeps applying entries: that is how a
        replica snapshots a large store without stopping for long (the store
        is frozen by copying its indexes, not its histories; sessions by
        copying their shape, not their remembered results; leases, which are
        small, are copied now)."""
        header = [_SNAPSHOT_MAGIC, SNAPSHOT_FORMAT, self.applied_index, self.applied_term, self._now]
        store = self._store.freeze()
        sessions = self._sessions.freeze(result_to_plain)
        leases = self._leases.to_plain()
        member_high = self.member_high
        return lambda: header + [store(), sessions(), leases, member_high]

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a `snapshot()` result.

        The state is replaced only if the snapshot decodes completely.

        Raises:
            CodecError: data is not a snapshot this version can read.
            InvalidRequest: data decodes but its content is malformed.
        """
        plain = decode(data)
        if type(plain) is not list or len(plain) < 2 or plain[0] != _SNAPSHOT_MAGIC:
            raise CodecError("not a raftkv state machine snapshot")
        if (plain[1], len(plain)) not in ((SNAPSHOT_FORMAT, 9), (2, 8)):
            raise CodecError(
                f"unknown snapshot format {plain[1]!r} (this replica reads {SNAPSHOT_FORMAT} and 2); upgrade it"
            )
        _, _, applied_index, applied_term, now, store_plain, sessions_plain, leases_plain = plain[:8]
        member_high = plain[8] if len(plain) == 9 else 0
        if (type(applied_index) is not int or type(applied_term) is not int or type(now) is not float
                or type(member_high) is not int or member_high < 0):
            raise InvalidRequest("malformed snapshot header")
        store = MVCCStore.from_plain(store_plain)
        sessions = SessionTable.from_plain(sessions_plain, self.limits, result_from_plain)
        attached = [(k, rec[LEASE]) for k, rec in store.range_items(b"\0", b"\0") if rec[LEASE]]
        leases = LeaseTable.from_plain(leases_plain, attached)
        leases.events.append(("reset", 0, 0))
        self._store = store
        self._leases = leases
        self._sessions = sessions
        self.applied_index = applied_index
        self.applied_term = applied_term
        self._now = now
        self.member_high = member_high
        log.info("kv.restored", applied_index=applied_index, revision=store.revision)


def _build(raw: tuple[Any, Any], header: ResponseHeader) -> Any:
    """Turn a txn's raw results into responses that all carry `header`."""
    cls, args = raw
    if cls is TxnResponse:
        succeeded, inner = args
        return TxnResponse(header, succeeded, tuple(_build(r, header) for r in inner))
    return cls(header, *args)
