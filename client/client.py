"""The user API: connect to a cluster by name, read and write with etcd semantics.

Theory of operation
-------------------
A `Client` owns one background thread running an asyncio loop. Every call,
sync (`put`) or async (`aput`), becomes a request queued on that loop. A
dispatcher drains the queue into batches: all writes queued while earlier
batches are in flight go to the leader in ONE actor call (`submit`), and the
leader proposes them as one log entry. Reads batch the same way (`query`).
So 64 concurrent callers cost a few Ray calls, not 64: a design with one Ray
call per operation tops out near 1,000 operations per second.

Routing and retries: the client remembers the leader; on "not_leader" it
follows the hint, on a timeout or a dead replica it asks every replica who
leads, and resends the same batch. Each write carries (client_id, seq) and the
state machine remembers results until the client acknowledges them, so a
resent write is applied exactly once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import random
import sys
import threading
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Sequence

import ray
import structlog

from kv import (
    Command,
    Compact,
    Compare,
    DeleteRange,
    KeyValue,
    Put,
    PutResponse,
    Range,
    RangeResponse,
    Txn,
    TxnResponse,
    prefix_end,
)
from kv.errors import (
    ClientClosed,
    ClusterNotFound,
    InvalidRequest,
    LeaseNotFound,
    RaftKVError,
    SessionExpired,
    Unavailable,
)
from kv.limits import DEFAULT_LIMITS, Limits
from kv.requests import LeaseGrant, LeaseKeepAlive, LeaseRevoke
from client.leases import Lease, LeaseStatus, Session, ttl_ms
from kv.validation import validate
from raft_actors.backup import BackupInfo, write_backup
from raft_actors.cluster import DEFAULT_NAMESPACE, describe_cluster
from raft_actors.node import actor_name

if TYPE_CHECKING:  # imported lazily at run time (they import this module)
    from client.election import Election
    from client.lock import Lock
    from client.watch import Watch, WatchHub

log = structlog.get_logger(__name__)

MAX_BATCH = 1024  # commands per actor call
ATTEMPT_TIMEOUT = 2.0  # seconds one actor call may take before the client looks for another leader
MAX_INFLIGHT = 8  # concurrent actor calls per kind (measured with 64 writers: 4 -> 4.6k/s, 8 -> 6.2k/s, 16 -> 5.5k/s)
_MISSING = object()


class _Pending:
    """One queued request: a sync caller's concurrent future, or an async
    caller's asyncio future together with the loop it belongs to."""

    __slots__ = ("item", "future", "loop")

    def __init__(self, item: Any, future: Any, loop: asyncio.AbstractEventLoop | None) -> None:
        self.item = item
        self.future = future
        self.loop = loop


class Client:
    """A connection to one raftkv cluster. Build it with `connect(name)`.

    Thread-safe. Every method has an async twin prefixed with `a` (`aput`,
    `aget`, ...) for use inside asyncio code (async Ray actors included).
    Consistency: writes are linearizable and applied exactly once; reads are
    linearizable unless `serializable=True`, which reads a replica's local
    state (possibly stale, never a value that was not committed).
    """

    def __init__(self, name: str, namespace: str = DEFAULT_NAMESPACE, timeout: float = 15.0,
                 limits: Limits | None = None) -> None:
        self.name = name
        self.namespace = namespace
        self.timeout = timeout
        self.limits = limits or DEFAULT_LIMITS
        self.client_id = uuid.uuid4().hex
        self._seq = itertools.count(1)  # drawn on the loop thread only
        self._outstanding: set[int] = set()
        self._handles: dict[int, Any] = {}
        # Members as last learned (replica indices): voters serve reads;
        # `_conf_index` is the configuration they come from.
        self._voters: list[int] = []
        self._members: list[int] = []
        self._conf_index = -1
        self._leader: int | None = None
        self._closed = False
        # The client loop thread hands results to callers' threads; the default
        # 5 ms GIL switch interval would add up to that much to every hand-off.
        if sys.getswitchinterval() > 0.001:
            sys.setswitchinterval(0.0005)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"raftkv-client-{name}", daemon=True)
        self._thread.start()
        self._inbox: deque[tuple[Any, _Pending]] = deque()  # appended from any thread
        self._inbox_scheduled = False
        self._writes: deque[_Pending] = deque()
        self._reads: dict[bool, deque[_Pending]] = {True: deque(), False: deque()}
        self._inflight = {"w": 0, True: 0, False: 0}
        try:
            self._call(self._discover())
        except BaseException:
            self._closed = True
            self._stop_loop()
            raise

    # ------------------------------------------------------------------
    # Key-value API. Each sync method has an async twin prefixed with "a".
    # ------------------------------------------------------------------
    def put(self, key: bytes | str, value: bytes | str, *, lease: "int | Lease" = 0,
            prev_kv: bool = False) -> PutResponse:
        """Set `key` to `value`. Returns a PutResponse (header with revision and raft term, prev_kv).

        With `lease` (a Lease or its id) the key is deleted when the lease ends.

        Raises:
            InvalidRequest / RequestTooLarge: bad key, value or size.
            LeaseNotFound: the lease does not exist (expired, revoked, never granted).
            Unavailable: no leader committed it within the timeout (outcome unknown).
        """
        return self._write(_put(key, value, lease, prev_kv)).result()

    async def aput(self, key: bytes | str, value: bytes | str, *, lease: "int | Lease" = 0,
                   prev_kv: bool = False) -> PutResponse:
        return await self._write(_put(key, value, lease, prev_kv), aio=True)

    def get(self, key: bytes | str, *, serializable: bool = False, revision: int = 0) -> KeyValue | None:
        """The key's KeyValue (current, or as of `revision`), or None if absent."""
        return _first(self._read(Range(key, None, 0, revision), serializable).result())

    async def aget(self, key: bytes | str, *, serializable: bool = False, revision: int = 0) -> KeyValue | None:
        return _first(await self._read(Range(key, None, 0, revision), serializable, aio=True))

    def get_prefix(self, prefix: bytes | str, *, serializable: bool = False, revision: int = 0, limit: int = 0,
                   sort_order: str = "ascend", sort_target: str = "key", keys_only: bool = False) -> list[KeyValue]:
        """Every key that starts with `prefix` (all keys for an empty prefix), sorted by key by default."""
        op = _prefix_range(prefix, limit, revision, sort_order, sort_target, keys_only)
        return list(self._read(op, serializable).result().kvs)

    async def aget_prefix(self, prefix: bytes | str, *, serializable: bool = False, revision: int = 0, limit: int = 0,
                          sort_order: str = "ascend", sort_target: str = "key", keys_only: bool = False) -> list[KeyValue]:
        op = _prefix_range(prefix, limit, revision, sort_order, sort_target, keys_only)
        return list((await self._read(op, serializable, aio=True)).kvs)

    def get_range(self, key: bytes | str, range_end: bytes | str | None = None, *, serializable: bool = False,
                  **options: Any) -> RangeResponse:
        """etcd's Range over [key, range_end): options limit, revision, sort_order, sort_target,
        keys_only, count_only. Returns the RangeResponse (kvs, count, more, header)."""
        return self._read(Range(key, range_end, **options), serializable).result()

    async def aget_range(self, key: bytes | str, range_end: bytes | str | None = None, *, serializable: bool = False,
                         **options: Any) -> RangeResponse:
        return await self._read(Range(key, range_end, **options), serializable, aio=True)

    def delete(self, key: bytes | str, *, prefix: bool = False, range_end: bytes | str | None = None,
               prev_kv: bool = False) -> int:
        """Delete a key (or every key with this prefix, or [key, range_end)). Returns how many were deleted."""
        return self._write(_delete_op(key, prefix, range_end, prev_kv)).result().deleted

    async def adelete(self, key: bytes | str, *, prefix: bool = False, range_end: bytes | str | None = None,
                      prev_kv: bool = False) -> int:
        return (await self._write(_delete_op(key, prefix, range_end, prev_kv), aio=True)).deleted

    def delete_prefix(self, prefix: bytes | str) -> int:
        return self.delete(prefix, prefix=True)

    def replace(self, key: bytes | str, old_value: bytes | str, new_value: bytes | str) -> bool:
        """Compare-and-swap: set `new_value` only if the current value is `old_value`. True if set."""
        return self._write(_cas(key, old_value, new_value)).result().succeeded

    async def areplace(self, key: bytes | str, old_value: bytes | str, new_value: bytes | str) -> bool:
        return (await self._write(_cas(key, old_value, new_value), aio=True)).succeeded

    def txn(self, compare: Sequence[Compare] | None = None, success: Sequence[Any] | None = None,
            failure: Sequence[Any] | None = None) -> Any:
        """An etcd transaction: if every compare holds run `success`, else `failure`, atomically.

        Called with no arguments it returns a builder instead:
        `client.txn().if_held(lock).then(Put(k, v)).else_(Range(k)).commit()`.

        Build compares with `client.value(key) == v`, `client.version(key) > 0`,
        `client.create_revision(key)`, `client.mod_revision(key)`, `client.lease_id(key)`
        (or `Compare(...)`), and ops with `Put`, `Range`, `DeleteRange`, `Txn`.
        Returns a TxnResponse (succeeded, responses, header).
        """
        if compare is None and success is None and failure is None:
            return TxnBuilder(self)
        return self._write(Txn(tuple(compare or ()), tuple(success or ()), tuple(failure or ()))).result()

    async def atxn(self, compare: Sequence[Compare] = (), success: Sequence[Any] = (),
                   failure: Sequence[Any] = ()) -> TxnResponse:
        return await self._write(Txn(tuple(compare), tuple(success), tuple(failure)), aio=True)

    def compact(self, revision: int) -> Any:
        """Discard history below `revision`; reads below it then fail with Compacted."""
        return self._write(Compact(revision)).result()

    async def acompact(self, revision: int) -> Any:
        return await self._write(Compact(revision), aio=True)

    # --- watches (client/watch.py) ---------------------------------------------
    def watch(self, key: bytes | str, start_revision: int | None = None, prefix: bool = False, *,
              range_end: bytes | str | None = None, prev_kv: bool = False, filters: Sequence[str] = ()) -> "Watch":
        """Watch a key (or a prefix, or [key, range_end)) for changes.

        Returns a Watch: iterate it (`for ev in w`) for events in revision
        order (kv.Event: .type "put"/"delete", .key, .value, .mod_revision,
        .create_revision, .version, .lease, .kv, .prev_kv); `w.cancel()` ends
        it. Keys (and a delete's empty value) are str if `key` is a str. All
        watches of a client share one long-poll stream to the leader.

        Args:
            start_revision: None (or 0): events after this call; it returns
                once the start is fixed, so a write acknowledged after it
                returns is delivered. R: replay history from revision R, then
                continue live.
            prefix: watch every key starting with `key` ("" for all keys).
            range_end: watch [key, range_end) instead (b"\0": every key >= key).
            prev_kv: fill each event's prev_kv (None if the key did not exist).
            filters: "noput" and/or "nodelete": leave those events out.

        Consistency: events are ordered, never repeated, never skipped, and a
        revision's events are never split; across leader fail-over too.

        Raises:
            Compacted: start_revision is at or below the compaction point
                (iteration raises it too if the watcher falls behind one).
            InvalidRequest: bad key, range, filters or start_revision.
            Unavailable: the cluster did not answer within the timeout.
        """
        return self._watch_hub().watch(key, start_revision, prefix, range_end=range_end, prev_kv=prev_kv,
                                       filters=filters)

    async def awatch(self, key: bytes | str, start_revision: int | None = None, prefix: bool = False, *,
                     range_end: bytes | str | None = None, prev_kv: bool = False,
                     filters: Sequence[str] = ()) -> "Watch":
        """The async twin of watch(); iterate the result with `async for`."""
        return await self._watch_hub().awatch(key, start_revision, prefix, range_end=range_end, prev_kv=prev_kv,
                                              filters=filters)

    def _watch_hub(self) -> "WatchHub":
        from client.watch import WatchHub

        self._check_open()
        hub = self.__dict__.get("_watch_hub_obj")
        if hub is None:  # setdefault: two threads racing here get the same hub
            hub = self.__dict__.setdefault("_watch_hub_obj", WatchHub(self))
        return hub
    # --- end watches -------------------------------------------------------------

    # ------------------------------------------------------------------
    # Leases
    # ------------------------------------------------------------------
    def lease(self, ttl: float, *, id: int = 0) -> Lease:
        """Grant a lease of `ttl` seconds (raised to the cluster's minimum,
        2 s by default; `Lease.ttl` says what was granted). Nothing renews
        it: call `refresh()`, or use `session()` for a background keep-alive.

        Args:
            ttl: seconds to live.
            id: the id wanted (0: the cluster picks one).
        Raises:
            LeaseExists: `id` is taken.
        """
        r = self._write(LeaseGrant(ttl_ms(ttl), id)).result()
        return Lease(self, r.id, r.ttl_ms / 1000.0)

    async def alease(self, ttl: float, *, id: int = 0) -> Lease:
        r = await self._write(LeaseGrant(ttl_ms(ttl), id), aio=True)
        return Lease(self, r.id, r.ttl_ms / 1000.0)

    def lease_keepalive(self, lease_id: "int | Lease") -> float:
        """Renew a lease for its full TTL (returned, in seconds). Raises LeaseNotFound."""
        return self._write(LeaseKeepAlive(_lease_id(lease_id))).result().ttl_ms / 1000.0

    async def alease_keepalive(self, lease_id: "int | Lease") -> float:
        return (await self._write(LeaseKeepAlive(_lease_id(lease_id)), aio=True)).ttl_ms / 1000.0

    def lease_revoke(self, lease_id: "int | Lease") -> int:
        """End a lease now, deleting its keys (returns how many). Raises LeaseNotFound."""
        return self._write(LeaseRevoke(_lease_id(lease_id))).result().deleted

    async def alease_revoke(self, lease_id: "int | Lease") -> int:
        return (await self._write(LeaseRevoke(_lease_id(lease_id)), aio=True)).deleted

    def lease_time_to_live(self, lease_id: "int | Lease", *, keys: bool = False) -> LeaseStatus:
        """The lease's TTL and time left on the leader's clock (linearizable). Raises LeaseNotFound."""
        self._check_open()
        return self._call(self._lease_info(_lease_id(lease_id), keys))

    async def alease_time_to_live(self, lease_id: "int | Lease", *, keys: bool = False) -> LeaseStatus:
        self._check_open()
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(self._lease_info(_lease_id(lease_id), keys), self._loop))

    def leases(self) -> list[LeaseStatus]:
        """Every lease of the cluster (linearizable)."""
        self._check_open()
        return self._call(self._lease_info(None, False))

    def session(self, ttl: float = 10.0) -> Session:
        """A lease renewed in the background every ttl/3 until `close()`
        (a context manager). Locks and elections are built on sessions."""
        self._check_open()
        return Session.create(self, ttl)

    async def asession(self, ttl: float = 10.0) -> Session:
        self._check_open()
        return await Session.acreate(self, ttl)

    # ------------------------------------------------------------------
    # Locks and elections (recipes over leases, txns and watches)
    # ------------------------------------------------------------------
    def lock(self, name: str, ttl: float = 10.0, timeout: float | None = None,
             session: Session | None = None) -> "Lock":
        """A fair distributed lock with a fencing token; acquire it with `with`
        (or `async with`, or `acquire()`). See client.lock for why fencing matters.

        Args:
            name: the lock's name (its keys live under a reserved prefix).
            ttl: the lease TTL of the session the lock makes for itself: how
                long a dead holder can keep it.
            timeout: seconds to wait for it (None: for ever); LockTimeout after.
            session: share an existing Session instead of making one.
        """
        from client.lock import Lock

        self._check_open()
        return Lock(self, name, ttl, timeout, session)

    def election(self, name: str, ttl: float = 10.0, session: Session | None = None) -> "Election":
        """A handle on leader election `name`: campaign, proclaim, resign,
        leader, observe. `ttl`: the campaigner's session lease TTL."""
        from client.election import Election

        self._check_open()
        return Election(self, name, ttl, session)

    async def _lease_info(self, lease_id: int | None, keys: bool) -> Any:
        infos = await self._route("lease_info", (None if lease_id is None else [lease_id], keys), leader_only=True)
        out = [LeaseStatus(i[0], i[1] / 1000.0, i[2] / 1000.0, tuple(i[3])) for i in infos if i is not None]
        if lease_id is None:
            return out
        if not out:
            raise LeaseNotFound(f"lease {lease_id} does not exist (never granted, expired or revoked)")
        return out[0]

    def snapshot(self, path: str) -> "BackupInfo":
        """Save a consistent backup of the whole store (every key with its
        history, leases, client sessions) to the file `path`, atomically.
        `raftkv restore PATH --name NEW` (or raft_actors.restore_cluster)
        starts a new cluster from it. Returns BackupInfo(path, index, term, revision, size)."""
        self._check_open()
        index, term, revision, data = self._call(self._route("backup", (), leader_only=True))
        return write_backup(path, index, term, revision, data)

    def status(self) -> list[dict]:
        """Every replica's status mapping (role, term, commit_index, applied_index, leader, ...)."""
        self._check_open()
        return asyncio.run_coroutine_threadsafe(self._statuses(), self._loop).result()

    async def astatus(self) -> list[dict]:
        self._check_open()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._statuses(), self._loop))

    # compare builders, python-etcd3 style: client.value("k") == "v"
    @staticmethod
    def value(key) -> "_CompareBuilder":
        return _CompareBuilder(key, "value")

    @staticmethod
    def version(key) -> "_CompareBuilder":
        return _CompareBuilder(key, "version")

    @staticmethod
    def create_revision(key) -> "_CompareBuilder":
        return _CompareBuilder(key, "create")

    @staticmethod
    def mod_revision(key) -> "_CompareBuilder":
        return _CompareBuilder(key, "mod")

    @staticmethod
    def lease_id(key) -> "_CompareBuilder":
        return _CompareBuilder(key, "lease")

    # ------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------
    def close(self) -> None:
        """Fail queued requests with ClientClosed and stop the client's thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.__dict__.get("_watch_hub_obj") is not None:
            self._watch_hub_obj.close()  # every watch ends (client/watch.py)

        async def fail_all() -> None:
            closed = ClientClosed("the client was closed")
            for q in (self._writes, self._reads[True], self._reads[False]):
                _resolve(list(q), [closed] * len(q))
                q.clear()
            pending = [p for _, p in self._inbox]
            self._inbox.clear()
            _resolve(pending, [closed] * len(pending))
            tasks = asyncio.all_tasks(self._loop) - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            if tasks:  # let them run their handlers: in-flight callers get ClientClosed, not silence
                await asyncio.wait(tasks, timeout=2)
            if on_loop:  # nobody is waiting to stop the loop after us
                self._loop.stop()

        on_loop = threading.current_thread() is self._thread
        if not self._loop.is_running():  # never started, or already stopped: nothing is waiting
            return
        done = asyncio.run_coroutine_threadsafe(fail_all(), self._loop)
        if not on_loop:
            try:
                done.result(5)
            except Exception:  # the loop is stuck or gone: stop it anyway
                pass
            self._stop_loop()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------
    # Plumbing
    # ------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("this client is closed; create a new one with client.connect(name)")

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _call(self, coro: Awaitable) -> Any:
        """Run a coroutine on the client loop and wait for it."""
        try:
            self._check_not_loop()
        except InvalidRequest:
            coro.close()  # type: ignore[attr-defined]
            raise
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _check_not_loop(self) -> None:
        """A blocking call on the client's own loop thread (a Session.on_lost
        callback runs there) would wait for the loop it blocks: refuse it."""
        if threading.current_thread() is self._thread:
            raise InvalidRequest("a blocking client call on the client's own loop thread (e.g. in a "
                                 "Session.on_lost callback) would deadlock; use the async form "
                                 "(await client.aput(...)) or hand the work to another thread")

    def _write(self, op: Any, aio: bool = False) -> Any:
        self._check_open()
        validate(op, self.limits)
        return self._enqueue("w", op, aio)

    def _read(self, op: Range, serializable: bool, aio: bool = False) -> Any:
        self._check_open()
        if not isinstance(serializable, bool):
            raise InvalidRequest(f"serializable must be a bool, got {serializable!r}")
        validate(op, self.limits)
        return self._enqueue(serializable, op, aio)

    def _enqueue(self, kind: Any, item: Any, aio: bool) -> Any:
        """Queue a request from any thread; returns the future the caller waits on.

        The client loop is woken once per burst of requests, not once per
        request: each wake-up is a syscall and a GIL hand-off.
        """
        if aio:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            fut: Any = loop.create_future()
        else:
            self._check_not_loop()
            loop, fut = None, concurrent.futures.Future()
        self._inbox.append((kind, _Pending(item, fut, loop)))
        if not self._inbox_scheduled:
            self._inbox_scheduled = True
            self._loop.call_soon_threadsafe(self._drain_inbox)
        return fut

    def _drain_inbox(self) -> None:
        self._inbox_scheduled = False  # cleared before draining: no wake-up is lost
        kinds = set()
        while self._inbox:
            kind, pending = self._inbox.popleft()
            if self._closed:
                _resolve([pending], [ClientClosed("the client was closed")])
                continue
            (self._writes if kind == "w" else self._reads[kind]).append(pending)
            kinds.add(kind)
        for kind in kinds:
            self._dispatch(kind)

    def _dispatch(self, kind: Any) -> None:
        q = self._writes if kind == "w" else self._reads[kind]
        while q and self._inflight[kind] < MAX_INFLIGHT:
            batch = [q.popleft() for _ in range(min(MAX_BATCH, len(q)))]
            self._inflight[kind] += 1
            coro = self._send_writes(batch) if kind == "w" else self._send_reads(batch, kind)
            self._loop.create_task(coro)

    async def _send_writes(self, batch: list[_Pending]) -> None:
        # Sequence numbers are drawn here, on the loop thread, in dispatch order:
        # then `ack` (the lowest unanswered seq) can never pass a seq still queued.
        session, outstanding = self.client_id, self._outstanding
        seqs = [next(self._seq) for _ in batch]
        outstanding.update(seqs)
        ack = min(outstanding)
        commands = [Command(session, seq, ack, p.item) for seq, p in zip(seqs, batch)]
        try:
            results = await self._route("submit", (commands,), leader_only=True)
            expired = [i for i, r in enumerate(results) if isinstance(r, SessionExpired)]
            if expired:
                # The cluster forgot our session (idle past its TTL); those
                # commands were not applied. Start a new session and resend.
                if session == self.client_id:
                    self._new_session()
                self._writes.extendleft(reversed([batch[i] for i in expired]))
                gone = set(expired)
                batch = [p for i, p in enumerate(batch) if i not in gone]
                results = [r for i, r in enumerate(results) if i not in gone]
            _settle(batch, results)
        except BaseException as exc:
            _fail(batch, exc)
        finally:
            outstanding.difference_update(seqs)
            self._inflight["w"] -= 1
            self._dispatch("w")

    def _new_session(self) -> None:
        log.info("client.new_session", cluster=self.name, old=self.client_id)
        self.client_id = uuid.uuid4().hex
        self._seq = itertools.count(1)
        self._outstanding = set()

    async def _send_reads(self, batch: list[_Pending], serializable: bool) -> None:
        try:
            results = await self._route("query", ([p.item for p in batch], not serializable),
                                        leader_only=not serializable)
            _settle(batch, results)
        except BaseException as exc:
            _fail(batch, exc)
        finally:
            self._inflight[serializable] -= 1
            self._dispatch(serializable)

    async def _route(self, method: str, args: tuple, leader_only: bool) -> list:
        """Call `method` on the leader (or any replica), following hints and retrying."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        backoff = _Backoff()

        def fresh_target() -> int | None:  # None: find the leader first
            return None if leader_only or not self._voters else random.choice(self._voters)

        target = fresh_target()
        last_error = "no leader"
        while loop.time() < deadline:
            if self._closed:
                raise ClientClosed("the client was closed")
            if target is None:
                target = self._leader if self._leader is not None else await self._find_leader(deadline)
                if target is None:
                    await backoff()
                    continue
            handle = self._handle(target)
            if handle is None:
                target = fresh_target()
                self._leader = None
                await backoff()
                continue
            try:
                # One attempt may not use the whole budget: a paused or cut-off
                # leader is replaced within an election timeout, and resending
                # with the same request ids is safe (applied at most once).
                attempt = min(max(0.05, deadline - loop.time()), ATTEMPT_TIMEOUT)
                status, payload = await asyncio.wait_for(_await_ref(getattr(handle, method).remote(*args)), attempt)
            except asyncio.TimeoutError:
                last_error = f"replica {target} did not answer"
                self._leader = None
                target = fresh_target()
                continue
            except Exception as exc:  # dead or restarting replica
                last_error = f"replica {target} failed: {type(exc).__name__}"
                self._handles.pop(target, None)
                self._leader = None
                target = fresh_target()
                await backoff()
                continue
            if status == "ok":
                if leader_only:
                    self._leader = target
                return payload
            if status == "not_leader":
                last_error = f"replica {target} is not the leader"
                self._leader = payload
                target = payload
                if payload is None:
                    await backoff()
                continue
            last_error = f"replica {target} timed out"  # "timeout": resend the same request ids
            self._leader = None
            target = None
        raise Unavailable(f"cluster {self.name!r}: no quorum answered within {self.timeout} s ({last_error}); "
                          f"a write's outcome is unknown")

    async def _find_leader(self, deadline: float) -> int | None:
        statuses = await self._statuses(per_call=0.5)
        if all(s.get("role") == "down" for s in statuses):
            # Every member we knew is gone (replaced while we were away):
            # find the cluster again by its actors' names.
            try:
                await self._discover()
            except ClusterNotFound:
                return None
            statuses = await self._statuses(per_call=0.5)
        best = None
        for s in statuses:
            if s.get("role") == "leader" and (best is None or s["term"] > best["term"]):
                best = s
        if best is not None:
            self._leader = best["replica"]
            return self._leader
        hints = [s.get("leader") for s in statuses if s.get("leader") is not None]
        return hints[0] if hints else None

    async def _statuses(self, per_call: float = 2.0) -> list[dict]:
        async def one(i: int) -> dict:
            handle = self._handle(i)
            if handle is None:
                return {"replica": i, "role": "down"}
            try:
                return await asyncio.wait_for(_await_ref(handle.status.remote()), per_call)
            except Exception:
                self._handles.pop(i, None)
                return {"replica": i, "role": "down"}

        out = list(await asyncio.gather(*(one(i) for i in self._members)))
        for s in out:  # follow membership changes (the newest committed configuration reported)
            if s.get("voters") and not s.get("conf_pending") and s.get("conf_index", -1) > self._conf_index:
                self._learn_members(s)
        return out

    def _learn_members(self, info: dict) -> None:
        self._conf_index = info["conf_index"]
        self._voters = sorted(info["voters"])
        self._members = sorted(info["voters"] + info["learners"])

    def _handle(self, index: int) -> Any:
        h = self._handles.get(index)
        if h is None:
            try:
                h = ray.get_actor(actor_name(self.name, index), namespace=self.namespace)
            except ValueError:
                return None
            self._handles[index] = h
        return h

    async def _discover(self) -> None:
        """Find the cluster's members: the newest configuration any replica
        actor of this name reports (asked off the loop: it calls Ray's
        control service)."""
        loop = asyncio.get_running_loop()
        info = await loop.run_in_executor(None, describe_cluster, self.name, self.namespace)
        if info is None:
            raise ClusterNotFound(f"no cluster named {self.name!r} in Ray namespace {self.namespace!r}; start one "
                                  f"with raft_actors.start_cluster({self.name!r}) or `raftkv start {self.name}`")
        self._learn_members(info)


class TxnBuilder:
    """Fluent form of a txn: `client.txn().if_(...).if_held(lock).then(...).else_(...).commit()`."""

    __slots__ = ("_client", "_compare", "_success", "_failure")

    def __init__(self, client: Client) -> None:
        self._client = client
        self._compare: list[Compare] = []
        self._success: list[Any] = []
        self._failure: list[Any] = []

    def if_(self, *compares: Compare) -> "TxnBuilder":
        self._compare.extend(compares)
        return self

    def if_held(self, holder: Any) -> "TxnBuilder":
        """Only while `holder` (a Lock, or an Election we lead) still holds:
        its key exists with its fencing token as create revision."""
        self._compare.append(holder.fence())
        return self

    def then(self, *ops: Any) -> "TxnBuilder":
        self._success.extend(ops)
        return self

    def else_(self, *ops: Any) -> "TxnBuilder":
        self._failure.extend(ops)
        return self

    def build(self) -> Txn:
        return Txn(tuple(self._compare), tuple(self._success), tuple(self._failure))

    def commit(self) -> TxnResponse:
        return self._client._write(self.build()).result()

    async def acommit(self) -> TxnResponse:
        return await self._client._write(self.build(), aio=True)


class _Backoff:
    """The pause between retries: 10 ms, doubling up to 200 ms."""

    __slots__ = ("delay",)

    def __init__(self) -> None:
        self.delay = 0.01

    async def __call__(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, 0.2)


class _CompareBuilder:
    """`client.value(key) == v` and friends build a txn Compare."""

    __slots__ = ("key", "target")

    def __init__(self, key: Any, target: str) -> None:
        self.key = key
        self.target = target

    def __eq__(self, other: Any) -> Compare:  # type: ignore[override]
        return Compare(self.key, self.target, "==", other)

    def __ne__(self, other: Any) -> Compare:  # type: ignore[override]
        return Compare(self.key, self.target, "!=", other)

    def __lt__(self, other: Any) -> Compare:
        return Compare(self.key, self.target, "<", other)

    def __gt__(self, other: Any) -> Compare:
        return Compare(self.key, self.target, ">", other)

    __hash__ = None  # type: ignore[assignment]


async def _await_ref(ref: Any) -> Any:
    # Awaiting an ObjectRef directly costs about twice the round trip of
    # awaiting its concurrent future (measured on Ray 2.5x).
    return await asyncio.wrap_future(ref.future())


def _put(key: Any, value: Any, lease: Any, prev_kv: bool) -> Put:
    return Put(key, value, _lease_id(lease) if lease else 0, prev_kv)


def _lease_id(lease: Any) -> int:
    if isinstance(lease, Lease):
        return lease.id
    if isinstance(lease, bool) or not isinstance(lease, int):
        raise InvalidRequest(f"lease must be a Lease or an int id, got {type(lease).__name__}")
    return lease


def _first(resp: RangeResponse) -> KeyValue | None:
    return resp.kvs[0] if resp.kvs else None


def _prefix_range(prefix: Any, limit: int, revision: int, sort_order: str, sort_target: str, keys_only: bool) -> Range:
    if prefix in (b"", ""):  # every key
        return Range(b"\0", b"\0", limit, revision, sort_order, sort_target, keys_only)
    return Range(prefix, prefix_end(prefix), limit, revision, sort_order, sort_target, keys_only)


def _delete_op(key: Any, prefix: bool, range_end: Any, prev_kv: bool) -> DeleteRange:
    if prefix:
        if range_end is not None:
            raise InvalidRequest("give prefix=True or range_end, not both")
        range_end = prefix_end(key)
    return DeleteRange(key, range_end, prev_kv)


def _cas(key: Any, old_value: Any, new_value: Any) -> Txn:
    return Txn((Compare(key, "value", "==", old_value),), (Put(key, new_value),), ())


def _settle(batch: list[_Pending], results: list) -> None:
    if len(results) != len(batch):
        # Never leave a caller waiting forever on a malformed answer.
        broken = RaftKVError(f"the cluster answered {len(results)} results for {len(batch)} requests")
        if len(results) == 1 and isinstance(results[0], BaseException):
            broken = results[0]
        results = [broken] * len(batch)
    _resolve(batch, results)


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    if isinstance(exc, asyncio.CancelledError):
        exc = ClientClosed("the client was closed while the request was in flight; its outcome is unknown")
    elif not isinstance(exc, RaftKVError):
        exc = Unavailable(f"request failed: {exc!r}")
    _resolve(batch, [exc] * len(batch))


def _resolve(batch: list[_Pending], outcomes: list) -> None:
    """Hand results (or exception instances) to their callers, one wake-up per caller loop."""
    by_loop: dict[Any, list] = {}
    for p, r in zip(batch, outcomes):
        if p.loop is None:
            if not p.future.done():
                if isinstance(r, BaseException):
                    p.future.set_exception(r)
                else:
                    p.future.set_result(r)
        else:
            by_loop.setdefault(p.loop, []).append((p.future, r))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve_here, items)
        except RuntimeError:  # the caller's loop is closed: nobody is waiting
            pass


def _resolve_here(items: list) -> None:
    for fut, r in items:
        if fut.done():  # the caller gave up (cancelled)
            continue
        if isinstance(r, BaseException):
            fut.set_exception(r)
        else:
            fut.set_result(r)


def connect(name: str, *, namespace: str = DEFAULT_NAMESPACE, timeout: float = 15.0, address: str | None = None) -> Client:
    """Connect to the cluster `name` from any Ray driver, task or actor.

    Args:
        name: the cluster's name (as given to `start_cluster`).
        namespace: the Ray namespace its replicas live in.
        timeout: seconds a request may take, retries included, before Unavailable.
        address: Ray address to attach to when Ray is not initialized yet
            (default "auto": the running Ray cluster).
    Raises:
        ClusterNotFound: no such cluster in the namespace.
    """
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"cluster name must be a non-empty str, got {name!r}")
    if not ray.is_initialized():
        try:
            ray.init(address=address or "auto", namespace=namespace, log_to_driver=False)
        except ConnectionError as exc:
            raise ClusterNotFound(f"no running Ray cluster at {address or 'auto'!r} ({exc}); start one with "
                                  f"`ray start --head`, or start raftkv inside this job with "
                                  f"raft_actors.start_cluster({name!r})") from exc
    return Client(name, namespace, timeout)
