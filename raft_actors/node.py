"""The replica: an async Ray actor that drives one Raft core.

Theory of operation
-------------------
A `RaftNode` owns one `RaftCore`, one durable log (`FileStorage`) and one
state machine (`KVStateMachine`). Everything that touches the core runs on the
actor's event loop, so the core needs no locks. One loop task does the work:

1. wait until something happened (a message, a proposal, a read) or a tick
   is due; turn elapsed monotonic time into `core.tick()` calls;
2. take the core's `Ready`;
3. **persist before send**: hard state and entries are written and fsynced on
   a single writer thread (the event loop stays free meanwhile; everything
   that arrived during one fsync goes into the next: group commit);
4. send the messages (one actor call per peer per Ready);
5. apply committed entries and answer the clients waiting on them;
6. release linearizable reads whose read index is applied; `advance()`.

Clients call `submit` (a batch of write commands, proposed as one entry) and
`query` (a batch of reads: linearizable through ReadIndex on the leader, or
serializable from local state). Both answer `("ok", results)` or
`("not_leader", leader_index)` or `("timeout", None)`; the client retries.
Peers call `receive`. Ray-level retries are off for all of these: Raft and the
client's request ids do the retrying.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import logging
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog

from kv import Command, KVStateMachine, encode, encode_batch
from kv.errors import InvalidRequest, NotLeader, StorageError
from kv.requests import LEADER_ONLY_OPS, Compact, LeaseGrant
from raft_actors.core import Config, RaftCore, Role
from raft_actors.leases import LeaseKeeper
from raft_actors.membership import ConfChange, ConfChangeNotLeader, ConfChangeRefused, Membership, decode_conf_entry
from raft_actors.retention import Retention
from raft_actors.transport import Transport
from raft_actors.types import NONE, Entry, EntryKind, HardState, Message, SnapshotMeta
from raft_actors.wal import FileStorage
from raft_actors.watch import WatchServer

log = structlog.get_logger(__name__)


INLINE_PERSIST_BYTES = 256 * 1024
# Freeze the heap (see _settle_heap) each time the store gained this many keys.
FREEZE_EVERY_KEYS = 50_000


def _ray_node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # not inside Ray (unit use)
        return None


def _settle_heap() -> None:
    """Move everything alive now out of the cyclic GC's sight (gc.freeze).

    The store holds millions of small objects; a full collection walks all
    of them (about a second per few million), and a replica paused that long
    loses its leadership. The store has no reference cycles to collect (its
    objects are freed by reference counting), so after loading or taking a
    snapshot (and each time the store gained FREEZE_EVERY_KEYS keys) the
    objects alive are frozen, and only newer ones are scanned.

    The young generations are collected first (cheap: they hold only what
    was allocated since the last collection), so that cyclic garbage made
    lately (asyncio's exceptions and tracebacks) is freed rather than frozen
    for good. No full collection: on a large heap that is the very pause to
    avoid.
    """
    gc.collect(1)
    gc.freeze()


def _encode_built(build: Any) -> bytes:
    """Build a frozen state machine's plain form and encode it (snapshot thread).

    The cyclic GC is off meanwhile: building makes millions of short-lived
    lists, and the collections they trigger hold the GIL for hundreds of
    milliseconds at a time (measured at 1M keys: the loop thread stalled
    300 ms with it on, 48 ms with it off), long enough to cost the leader
    its leadership. Everything built is freed by reference counting.
    """
    gc.disable()
    try:
        plain = build()
        data = encode(plain)
        _release(plain)
        return data
    finally:
        gc.enable()


def _release(x: list, part: int = 2048) -> None:
    """Empty a large nested list a slice at a time (snapshot thread).

    Dropping a snapshot's plain form in one go frees millions of objects in
    one C-level cascade that holds the GIL throughout (tens of milliseconds
    alone, several hundred with three replicas building at once on two
    cores: a leader's heartbeats wait that long). Slice by slice, the event
    loop gets the GIL between slices.
    """
    _release_at(x, part, 0)


def _release_at(x: list, part: int, depth: int) -> None:
    while x:
        tail = x[-part:]
        del x[-part:]
        for y in tail:
            # the few small lists near the top hold the large ones (the store's flat key list)
            if type(y) is list and (len(y) > part or depth < 2):
                _release_at(y, part, depth + 1)
        del tail


def _rss_bytes() -> int:
    """This process's resident memory (Linux), 0 if unknown."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def actor_name(cluster: str, index: int) -> str:
    """The Ray actor name of replica `index` (0-based) of `cluster`."""
    return f"raftkv/{cluster}/{index}"


MEMBERS_FILE = "members.json"
LOST_DATA = "is empty or gone"  # in the refusal of a member restarted without its data


def replica_dir(data_dir: str, index: int) -> str:
    """Where replica `index` of a cluster with data in `data_dir` keeps its log."""
    return os.path.join(data_dir, f"replica-{index}")


def _has_data(path: str) -> bool:
    """Whether a replica directory holds anything but its lock file."""
    try:
        return any(n != "LOCK" for n in os.listdir(path))
    except FileNotFoundError:
        return False


def read_members_file(path: str) -> dict | None:
    """The last committed configuration a replica wrote to its directory
    (`{"conf_index", "voters", "learners"}`, replica indices), or None."""
    try:
        with open(os.path.join(path, MEMBERS_FILE)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not all(k in data for k in ("conf_index", "voters", "learners")):
        return None
    return data


def _membership_view(m: Membership) -> dict:
    """A configuration in replica indices (Raft id - 1)."""
    return {"voters": [v - 1 for v in m.voters], "learners": [v - 1 for v in m.learners]}


@dataclass(frozen=True)
class NodeOptions:
    """Timing and limits of a replica. Defaults suit one machine; raise the
    tick for multi-node clusters on slow networks.

    Attributes:
        tick_ms: length of one Raft tick.
        election_ticks: election timeout in ticks (randomized up to 2x).
        heartbeat_ticks: leader heartbeat interval in ticks.
        request_timeout_s: how long a replica waits for a proposal to commit
            or a read index to be confirmed before answering "timeout".
        log_level: structlog level inside the replica processes.
        lease_checkpoint_s: how often the leader writes remaining lease TTLs
            to the log (bounds how long a leader change can extend a lease).
        snapshot_entries, snapshot_log_bytes: take a state machine snapshot
            and discard the log it covers once this many entries, or bytes
            of entries, were applied since the last one.
        keep_revisions, keep_seconds: MVCC history the leader keeps before it
            compacts automatically: at least this many revisions, and (if
            set) at least this many seconds of history. 0 turns either off.
    """

    tick_ms: int = 30
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    request_timeout_s: float = 5.0
    log_level: str = "warning"
    lease_checkpoint_s: float = 0.5
    snapshot_entries: int = 20_000
    snapshot_log_bytes: int = 64 * 1024 * 1024
    keep_revisions: int = 100_000
    keep_seconds: float = 0.0

    @property
    def min_lease_ttl_ms(self) -> int:
        """The shortest lease granted: longer than an election takes (etcd
        uses 1.5 election timeouts; we use 1.5 of the longest randomized one,
        and at least 2 s), so a leader change does not expire healthy leases."""
        return max(2000, int(1.5 * 2 * self.election_ticks * self.tick_ms))


class RaftNode:
    """One Raft replica as an async Ray actor. See the module docstring."""

    def __init__(self, cluster: str, index: int, members: list[int], namespace: str, data_dir: str,
                 options: NodeOptions | None = None, detached: bool = False, *, join: bool = False,
                 expect_data: bool = False) -> None:
        """Open replica `index`'s log and state.

        Args:
            members: the voters' indices of a brand-new cluster (ignored once
                the log records a configuration, which it does from its first
                entry on).
            join: a new member being added: it starts with an empty data
                directory and no configuration, and waits for the leader.
            expect_data: a restart: the data directory must hold this
                replica's log. One that is empty or gone is refused, since a
                replica that forgot its votes must not come back under its
                old identity (it could vote twice in a term).
        """
        self.detached = detached
        self.opts = options or NodeOptions()
        # The event loop shares the GIL with Ray's threads and the WAL writer;
        # the default 5 ms switch interval would add up to 5 ms to every hand-off.
        sys.setswitchinterval(0.0005)
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, self.opts.log_level.upper(), logging.WARNING)))
        self.cluster = cluster
        self.index = index
        self.namespace = namespace
        self.id = index + 1  # Raft ids are positive
        self.data_dir = replica_dir(data_dir, index)
        if join and _has_data(self.data_dir):
            raise StorageError(f"{self.data_dir} already holds replica data; a new member starts from an empty "
                               "directory (replica indices are never reused)")
        if expect_data and not _has_data(self.data_dir):
            raise StorageError(f"{self.data_dir} {LOST_DATA}: replica {index} lost its log and cannot come "
                               "back under its old identity; remove it and add a new replica")
        self.storage = FileStorage(self.data_dir)
        self.node_id = _ray_node_id()
        persisted = self.storage.load()
        peers = () if join else tuple(i + 1 for i in members)
        config = Config(id=self.id, peers=peers, election_tick=self.opts.election_ticks,
                        heartbeat_tick=self.opts.heartbeat_ticks)
        self.core = RaftCore(config, persisted, random.Random(int.from_bytes(os.urandom(8), "little")))
        self.sm = KVStateMachine()
        if persisted.snapshot_data is not None:
            started = time.perf_counter()
            self.sm.restore(persisted.snapshot_data)
            log.info("replica.snapshot_loaded", replica=index, index=persisted.snapshot.index,
                     bytes=len(persisted.snapshot_data), seconds=round(time.perf_counter() - started, 3))
        elif persisted.snapshot.index:
            raise RuntimeError(f"{self.data_dir}: the log starts after {persisted.snapshot.index} "
                               "but no snapshot data was found; restore this replica from a backup")
        _settle_heap()
        self._frozen_keys = len(self.sm.store)  # store size at the last _settle_heap
        self._snap_io = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"snap-{index}")
        self._snap_task: asyncio.Task | None = None
        self._snap_ready: tuple[SnapshotMeta, bytes] | None = None
        self._since_snapshot = [0, 0]  # entries, bytes applied since the last snapshot
        self.watches = WatchServer(lambda: self.sm.store)  # answers watch_poll
        self.transport = Transport(self.id, self._resolve_peer)
        self.leases = LeaseKeeper(self.opts.lease_checkpoint_s)
        self.retention = Retention(self.opts.keep_revisions, self.opts.keep_seconds)
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"wal-{index}")
        self._waiters: dict[int, tuple[asyncio.Future, int]] = {}  # log index -> (future, term)
        self._read_waiters: dict[bytes, asyncio.Future] = {}  # ReadIndex context -> future
        self._apply_waiters: list[tuple[int, asyncio.Future]] = []  # (index, future) until applied
        self._ctx = itertools.count(1)
        self._durable_hs: HardState | None = persisted.hard_state
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closed = False
        self._failed = False
        self._conf_written = -1  # conf index of the configuration last written to MEMBERS_FILE
        self.stats = {"readies": 0, "fsyncs": 0, "entries": 0, "proposals": 0, "snapshots": 0,
                      "snapshots_installed": 0, "snapshot_pause_ms": 0.0, "snapshot_bytes": 0,
                      "stalls": 0, "stall_ms_max": 0.0}
        log.info("replica.open", replica=index, term=persisted.hard_state.term,
                 index=persisted.entries[-1].index if persisted.entries else persisted.snapshot.index)

    # ------------------------------------------------------------------
    # Peer and operator RPCs
    # ------------------------------------------------------------------
    async def start(self) -> bool:
        self._ensure_started()
        return True

    async def describe(self) -> dict:
        """What a client or operator needs to find and manage the cluster:
        members as this replica knows them (replica indices), and the index
        the next new member gets (indices are never reused)."""
        conf = self.core.membership
        view = _membership_view(conf)
        return {"name": self.cluster, "replicas": len(conf.voters), "namespace": self.namespace,
                "data_dir": os.path.dirname(self.data_dir), "detached": self.detached, "options": self.opts,
                "members": sorted(view["voters"] + view["learners"]), **view,
                "conf_index": self.core.log.conf_index, "commit_index": self.core.log.committed,
                "next_index": self._next_index()}

    def _next_index(self) -> int:
        # ids are index + 1: the next id after the highest ever is that id as an index
        return max(self.sm.member_high, *self.core.membership.members, 0)

    async def ping(self) -> None:
        """No-op: the Ray round-trip baseline of the benchmark."""
        return None

    async def receive(self, src: int, messages: list[Message]) -> None:
        """Raft messages from peer `src` (one call per peer per Ready)."""
        self._ensure_started()
        if self._closed or not self.transport.accepts(src):
            return
        for m in messages:
            self.core.step(m)
        self._wake.set()

    async def set_faults(self, blocked: list[int], drop_rate: float = 0.0, delay: float = 0.0,
                         blocked_in: list[int] | None = None) -> None:
        """Fault injection: stop sending to replica indices `blocked` and
        receiving from `blocked_in` (default: the same ones)."""
        self.transport.set_faults([b + 1 for b in blocked], drop_rate, delay,
                                  None if blocked_in is None else [b + 1 for b in blocked_in])

    async def status(self) -> dict:
        s = self.core.status()
        leader = s["leader"]
        conf = self.core.membership
        role = "failed" if self._failed else s["role"]
        if role != "failed" and self.id not in conf.members and conf.members:
            role = "removed"
        elif role == "follower" and conf.is_learner(self.id):
            role = "learner"
        return {
            "replica": self.index,
            "name": actor_name(self.cluster, self.index),
            "role": role,
            **_membership_view(conf),
            "conf_index": s["conf_index"],
            "conf_pending": s["conf_pending"],
            "term": s["term"],
            "leader": leader - 1 if leader != NONE else None,
            "commit_index": s["commit_index"],
            # The state machine's, not the core's: after InstallSnapshot the
            # core counts the snapshot applied as soon as its last chunk is
            # in, seconds before this replica has saved it and loaded its store.
            "applied_index": self.sm.applied_index,
            "last_index": s["last_index"],
            "snapshot_index": s["snapshot_index"],
            "snapshot_running": self._snap_task is not None,
            "revision": self.sm.revision,
            "data_dir": self.data_dir,
            "node_id": self.node_id,
            "stats": dict(self.stats),
            "rss_bytes": _rss_bytes(),
        }

    async def take_snapshot(self) -> bool:
        """Snapshot now (operator use and benchmarks). False if one is already being written."""
        self._ensure_started()
        if self._snap_task is not None or self._closed:
            return False
        self._start_snapshot()
        return True

    async def transfer_leadership(self, to_index: int) -> None:
        """Move leadership to replica `to_index` once it has caught up.

        Raises:
            NotLeader: this replica does not lead.
        """
        self._ensure_started()
        self.core.transfer_leadership(to_index + 1)
        self._wake.set()

    async def change_membership(self, kind: str, index: int) -> tuple[str, Any]:
        """Propose a membership change and answer once it is committed.

        Args:
            kind: "add_learner", "promote" or "remove".
            index: the replica index it concerns.
        Returns:
            ("ok", {"voters": [...], "learners": [...]}) once committed;
            ("not_leader", leader_index_or_None); ("refused", (reason, message))
            with a `Refusal` value (nothing was changed); or ("timeout", None):
            not committed in time, check the membership and retry.
        """
        self._ensure_started()
        makers = {"add_learner": ConfChange.add_learner, "promote": ConfChange.promote, "remove": ConfChange.remove}
        if kind not in makers or type(index) is not int or index < 0:
            return ("refused", ("invalid", f"bad membership change {kind!r} of replica {index!r}"))
        if self.core.role != Role.LEADER or self._closed:
            return ("not_leader", self._leader_index())
        if kind == "add_learner" and index < self._next_index():
            return ("refused", ("id_used", f"replica index {index} is or was a member; indices are never reused "
                                           f"(the next free one is {self._next_index()})"))
        try:
            at = self.core.propose_conf_change(makers[kind](index + 1))
        except ConfChangeNotLeader:
            return ("not_leader", self._leader_index())
        except ConfChangeRefused as exc:
            return ("refused", (exc.reason.value, str(exc)))
        status, payload = await self._await_entry(at)
        if status != "ok":
            return (status, payload)
        log.info("replica.membership_changed", replica=self.index, term=self.core.term, index=at, change=kind,
                 member=index)
        return ("ok", _membership_view(self.core.membership))

    async def retire(self, wait_s: float = 3.0) -> bool:
        """A replica that was removed from the configuration closes and renames
        its data directory to `<dir>.removed-<time>`, so nothing can start it
        again under its identity. Waits up to `wait_s` to hear of its removal
        (the leader goes on sending to a removed replica for an election
        timeout so that it does); returns False, having done nothing, if it
        is still a member by then."""
        self._ensure_started()
        deadline = time.monotonic() + wait_s
        while True:
            conf = self.core.membership
            if conf.members and self.id not in conf.members:
                break
            if time.monotonic() >= deadline or self._closed:
                return False
            await asyncio.sleep(0.05)
        await self.close()
        gone = f"{self.data_dir}.removed-{int(time.time())}"
        os.rename(self.data_dir, gone)
        log.info("replica.retired", replica=self.index, term=self.core.term, moved_to=gone)
        return True

    async def campaign(self) -> None:
        """Start an election now (operator use and tests)."""
        self._ensure_started()
        self.core.campaign()
        self._wake.set()

    async def close(self) -> None:
        """Stop the loop, fail waiting clients, close the log. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        self._fail_waiters(NotLeader("replica closed"))
        await self.transport.close()
        # Record how far the log is known committed, so a restart replays that
        # much at once (commit-only changes are not written while running).
        hs = HardState(self.core.term, self.core.vote, min(self.core.log.committed, self.core.log.stable))
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._io, self._persist, hs, [])
        except Exception as exc:  # the log may be what failed; closing must still finish
            log.warning("replica.close_persist_failed", replica=self.index, term=self.core.term, error=repr(exc))
        await loop.run_in_executor(None, self._snap_io.shutdown, True)  # a snapshot being written finishes
        await loop.run_in_executor(self._io, self.storage.close)
        self._io.shutdown(wait=True)
        log.info("replica.closed", replica=self.index, term=self.core.term)

    # ------------------------------------------------------------------
    # Client RPCs
    # ------------------------------------------------------------------
    async def submit(self, commands: list) -> tuple[str, Any]:
        """Propose a batch of write commands as one log entry; answer when applied.

        Returns ("ok", results) with one result (a response, or an exception
        instance for a command that failed deterministically) per command;
        ("not_leader", leader_index_or_None); or ("timeout", None), in which
        case the commands may or may not have been applied (retry with the same
        request ids: the state machine applies each at most once).
        """
        self._ensure_started()
        core = self.core
        if core.role != Role.LEADER or core.lead_transferee != NONE or self._closed:
            return ("not_leader", self._leader_index())
        try:
            commands = self._admit(commands)
        except InvalidRequest as exc:  # nothing of this batch is proposed
            return ("ok", [exc] * len(commands))
        data = encode_batch(commands, time.time())
        index = core.propose([data])
        self.stats["proposals"] += 1
        return await self._await_entry(index)

    async def _await_entry(self, index: int) -> tuple[str, Any]:
        """Wait until the entry this leader just appended at `index` is applied.

        Returns ("ok", its results); ("not_leader", leader_index_or_None) if
        leadership changed or a newer leader replaced the entry; ("timeout",
        None) after request_timeout_s (the entry may still commit).
        """
        fut = asyncio.get_running_loop().create_future()
        self._waiters[index] = (fut, self.core.term)
        self._wake.set()
        try:
            results = await asyncio.wait_for(fut, self.opts.request_timeout_s)
        except NotLeader:
            return ("not_leader", self._leader_index())
        except asyncio.TimeoutError:
            return ("timeout", None)
        return ("ok", results)

    def _admit(self, commands: list) -> list:
        """Raise short lease TTLs to the minimum (the state machine applies
        what is proposed). Raises InvalidRequest for a request only a leader
        may propose (time enters the log only through the leader)."""
        out = None
        min_ttl = self.opts.min_lease_ttl_ms
        for i, c in enumerate(commands):
            op = c.op
            t = type(op)
            if t is LeaseGrant and type(op.ttl_ms) is int and op.ttl_ms < min_ttl:
                op = LeaseGrant(min_ttl, op.id)
            elif t in LEADER_ONLY_OPS:
                raise InvalidRequest(f"{t.__name__} is proposed by the leader only")
            if op is not c.op:
                if out is None:
                    out = list(commands)
                out[i] = Command(c.client_id, c.seq, c.ack, op)
        return commands if out is None else out

    async def lease_info(self, ids: list[int] | None, with_keys: bool = False) -> tuple[str, Any]:
        """Leases as the leader sees them (after a ReadIndex round): for each
        id asked (None: every lease), (id, granted ttl_ms, remaining ms on the
        leader's clock, attached keys or []) or None if it does not exist."""
        status = await self._linearize()
        if status is not None:
            return status
        table, now = self.sm.leases, time.monotonic()
        out = []
        for lease_id in table.ids() if ids is None else ids:
            lease = table.get(lease_id)
            if lease is None:
                out.append(None)
                continue
            left = self.leases.remaining_ms(lease_id, now)
            out.append((lease.id, lease.ttl_ms, lease.remaining_ms if left is None else left,
                        sorted(lease.keys) if with_keys else []))
        return ("ok", out)

    async def backup(self) -> tuple[str, Any]:
        """A consistent snapshot of the state machine for a backup: after a
        ReadIndex round, so it holds every write acknowledged before the call.
        Returns ("ok", (index, term, revision, data)); encoding runs off the loop."""
        status = await self._linearize()
        if status is not None:
            return status
        index, revision = self.sm.applied_index, self.sm.revision
        term = self.sm.applied_term
        build = self.sm.snapshot_source()
        data = await asyncio.get_running_loop().run_in_executor(self._snap_io, _encode_built, build)
        return ("ok", (index, term, revision, data))

    async def _linearize(self) -> tuple[str, Any] | None:
        """Wait until a ReadIndex round confirms leadership and this replica
        has applied up to the read index. None when done, else the answer
        to give the client ("not_leader" or "timeout")."""
        if self.core.role != Role.LEADER or self._closed:
            return ("not_leader", self._leader_index())
        ctx = next(self._ctx).to_bytes(8, "little")
        fut = asyncio.get_running_loop().create_future()
        self._read_waiters[ctx] = fut
        self.core.read_index(ctx)
        self._wake.set()
        try:
            await asyncio.wait_for(fut, self.opts.request_timeout_s)
        except NotLeader:
            return ("not_leader", self._leader_index())
        except asyncio.TimeoutError:
            self._read_waiters.pop(ctx, None)
            return ("timeout", None)
        return None

    async def query(self, ops: list, linearizable: bool = True) -> tuple[str, Any]:
        """Run a batch of reads.

        Linearizable (the default): on the leader only, after a ReadIndex
        round confirms leadership and the read index is applied, so the reads
        see every write acknowledged before the call. Serializable: from this
        replica's applied state at once (may be stale).
        """
        self._ensure_started()
        if linearizable:
            status = await self._linearize()
            if status is not None:
                return status
        term = self.core.term
        results = []
        for op in ops:
            try:
                results.append(self.sm.read(op, term))
            except Exception as exc:  # typed, deterministic read errors go back per op
                results.append(exc)
        return ("ok", results)

    # --- watches (raft_actors/watch.py) ------------------------------------
    async def watch_poll(self, watchers: dict, wait_s: float) -> tuple[str, Any]:
        """Long poll for the events of many watchers at once (one client's hub).

        Args:
            watchers: {watch_id: (key, range_end, next_revision, prev_kv, filters)},
                keys as bytes (see raft_actors/watch.py).
            wait_s: how long to wait when no watcher has anything new.

        Returns ("ok", WatchBatch) as soon as some watcher has events or an
        error, else after wait_s with bookmarks only; ("not_leader",
        leader_index_or_None) if this replica does not lead, or stops leading
        while waiting. Events come from applied (committed) history only.
        """
        self._ensure_started()
        batch = await self.watches.poll(watchers, wait_s, self._serves_watches)
        if batch is None:
            return ("not_leader", self._leader_index())
        return ("ok", batch)

    def _serves_watches(self) -> bool:
        return self.core.role == Role.LEADER and not self._closed
    # --- end watches --------------------------------------------------------

    # ------------------------------------------------------------------
    # The loop
    # ------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._task is None and not self._closed:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        tick_s = self.opts.tick_ms / 1000.0
        # A tick this late means the loop was held up for half the shortest
        # election timeout: long enough, as a leader, to cost leadership.
        stall_s = tick_s * self.opts.election_ticks / 2
        next_tick = loop.time() + tick_s
        try:
            while not self._closed:
                delay = next_tick - loop.time()
                if delay > 0 and not self._wake.is_set():
                    try:
                        await asyncio.wait_for(self._wake.wait(), delay)
                    except asyncio.TimeoutError:
                        pass
                self._wake.clear()
                now = loop.time()
                if now >= next_tick:
                    if now - next_tick > stall_s:
                        self._note_stall(now - next_tick)
                    # One tick per wake-up at most: after a stall we would rather
                    # lose time than fire a burst of elections.
                    self.core.tick()
                    next_tick = max(next_tick + tick_s, now + tick_s / 2)
                    self._propose_lease_work()
                # Let requests and messages already queued on the loop step the
                # core first, so one Ready (one fsync, one call per peer) takes
                # them all.
                await asyncio.sleep(0)
                while self.core.has_ready() and not self._closed:
                    await self._handle_ready(loop)
                if self._snap_ready is not None:
                    self._finish_snapshot()
                elif self._snap_task is None and self._snapshot_due():
                    self._start_snapshot()
        except asyncio.CancelledError:
            pass
        except Exception:
            # Fail-stop: a replica whose log write failed must not go on as if
            # it had persisted; the others elect around it.
            log.exception("replica.loop_failed", replica=self.index, term=self.core.term)
            self._closed = True
            self._failed = True
            self._fail_waiters(NotLeader("replica failed"))

    def _note_stall(self, late_s: float) -> None:
        ms = round(late_s * 1000, 1)
        self.stats["stalls"] += 1
        self.stats["stall_ms_max"] = max(self.stats["stall_ms_max"], ms)
        log.warning("replica.loop_stalled", replica=self.index, term=self.core.term, role=self.core.role.name.lower(),
                    late_ms=ms, snapshot_running=self._snap_task is not None)

    async def _handle_ready(self, loop: asyncio.AbstractEventLoop) -> None:
        rd = self.core.ready()
        self.stats["readies"] += 1
        if rd.snapshot is not None:
            # A leader's snapshot: durable before anything that follows it in
            # the log and before our acknowledgement leaves.
            await loop.run_in_executor(self._io, self.storage.save_snapshot, rd.snapshot.meta, rd.snapshot.data)
        if rd.early_send and rd.messages:
            self.transport.send(rd.messages)  # a leader's appends go out while it fsyncs
        hard_state = self._hard_state_to_write(rd.hard_state)
        if hard_state is not None or rd.entries:
            # One write and one fdatasync for everything this Ready gathered
            # (group commit). A small one is done inline: handing it to the
            # writer thread costs more in GIL hand-offs (measured: ~1 ms under
            # load) than the fdatasync itself (~0.15 ms). Large ones go to the
            # writer thread so the loop keeps serving meanwhile.
            if sum(len(e.data) for e in rd.entries) < INLINE_PERSIST_BYTES:
                self._persist(hard_state, rd.entries)
            else:
                await loop.run_in_executor(self._io, self._persist, hard_state, rd.entries)
            self.stats["fsyncs"] += 1
            self.stats["entries"] += len(rd.entries)
        if rd.messages and not rd.early_send:
            self.transport.send(rd.messages)
        # A read index not applied yet waits for _apply (it is at most the
        # commit index, so this Ready's committed entries reach it).
        if rd.snapshot is not None:
            self.sm.restore(rd.snapshot.data)
            self._since_snapshot = [0, 0]
            self.stats["snapshots_installed"] += 1
            log.info("replica.snapshot_installed", replica=self.index, term=self.core.term,
                     index=rd.snapshot.meta.index, bytes=len(rd.snapshot.data))
            if self.sm.leases.events:
                self.leases.observe(self.sm.leases, time.monotonic())
            self.watches.notify(self.sm.revision)
            self._conf_committed(rd.snapshot.meta.index, rd.snapshot.meta.conf)
            _settle_heap()
            self._frozen_keys = len(self.sm.store)
        for rs in rd.read_states:
            fut = self._read_waiters.pop(rs.context, None)
            if fut is not None and not fut.done():
                if rs.index <= self.core.log.applied:
                    fut.set_result(rs.index)
                else:
                    self._apply_waiters.append((rs.index, fut))
        if rd.committed:
            self._apply(rd.committed)
        if rd.soft_state is not None:
            lead, role = rd.soft_state
            log.info("replica.role", replica=self.index, term=self.core.term, role=Role(role).name.lower(),
                     leader=lead - 1 if lead else None)
            self.retention.reset()
            if role == Role.LEADER:
                self.leases.become_leader(self.sm.leases, time.monotonic())
            else:
                self.leases.step_down()
            if role != Role.LEADER:
                self._fail_waiters(NotLeader("leadership changed", lead))
        self.core.advance(rd)

    # --- snapshots ------------------------------------------------------------
    # The state machine is frozen on the loop (copies of its indexes: the only
    # pause), turned into plain values, encoded and written to its file on
    # the snapshot thread while the replica goes on serving, then recorded and
    # the log prefix dropped on the loop between two Readies (core.compact
    # needs that).

    def _snapshot_due(self) -> bool:
        entries, size = self._since_snapshot
        return entries >= self.opts.snapshot_entries or size >= self.opts.snapshot_log_bytes

    def _start_snapshot(self) -> None:
        index = self.sm.applied_index
        if index <= self.core.log.snapshot_index:
            return
        started = time.perf_counter()
        meta = self.core.snapshot_meta(index)  # position and configuration
        build = self.sm.snapshot_source()
        pause_ms = (time.perf_counter() - started) * 1000
        self.stats["snapshot_pause_ms"] = round(pause_ms, 2)
        self._since_snapshot = [0, 0]
        self._snap_task = asyncio.get_running_loop().create_task(self._write_snapshot(meta, build))

    async def _write_snapshot(self, meta: SnapshotMeta, build: Any) -> None:
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(self._snap_io, _encode_built, build)
            await loop.run_in_executor(self._snap_io, self.storage.prepare_snapshot, meta, data)
        except Exception:
            log.exception("replica.snapshot_failed", replica=self.index, term=self.core.term, index=meta.index)
            self._snap_task = None
            return
        self._snap_ready = (meta, data)
        if self._wake is not None:
            self._wake.set()

    def _finish_snapshot(self) -> None:
        meta, data = self._snap_ready  # type: ignore[misc]
        self._snap_ready = None
        self._snap_task = None
        compacted = self.core.compact(meta.index, data)
        if compacted is None:  # a leader's newer snapshot got here first
            return
        self.storage.save_snapshot(compacted, data)
        self.stats["snapshots"] += 1
        self.stats["snapshot_bytes"] = len(data)
        _settle_heap()
        self._frozen_keys = len(self.sm.store)
        log.info("replica.snapshot", replica=self.index, term=self.core.term, index=meta.index, bytes=len(data),
                 pause_ms=self.stats["snapshot_pause_ms"])

    def _propose_lease_work(self) -> None:
        """As leader: propose expiries of leases past their deadline,
        checkpoints of remaining TTLs (see raft_actors.leases) and automatic
        history compaction (raft_actors.retention)."""
        if self.core.role != Role.LEADER or self.core.lead_transferee != NONE:
            return
        now = time.monotonic()
        ops = self.leases.due(self.sm.leases, now)
        target = self.retention.due(now, self.sm.revision, self.sm.compact_revision)
        if target is not None:
            ops.append(Compact(target))
        if ops:
            self.core.propose([encode_batch([Command("", 0, 0, op) for op in ops], time.time())])

    def _hard_state_to_write(self, hs: HardState | None) -> HardState | None:
        """Which hard state must reach disk with this Ready.

        Term and vote must be durable before any message leaves (a vote given
        twice in one term breaks election safety). The commit index need not
        be: after a restart it is learned again from the leader (only the
        state machine's replay starts lower), so a commit-only change is not
        written at all; it goes to disk with the next term or vote change and
        on a graceful close. Writing it costs an atomic file replace (three
        fsyncs), which per Ready would triple the cost of a write.
        """
        if hs is None:
            return None
        last = self._durable_hs
        if last is not None and hs.term == last.term and hs.vote == last.vote:
            return None
        self._durable_hs = hs
        return hs

    def _persist(self, hard_state: HardState | None, entries: list[Entry]) -> None:
        if entries:
            self.storage.append(entries)
        if hard_state is not None:
            self.storage.set_hard_state(hard_state)
        self.storage.sync()

    def _apply(self, entries: list[Entry]) -> None:
        applied = 0
        for e in entries:
            # Every entry moves the state machine's applied index, no-ops and
            # configuration entries included (they carry no commands): a
            # snapshot then covers exactly what the core has applied.
            data = e.data if e.kind == EntryKind.NORMAL else b""
            results = self.sm.apply(e.index, e.term, data)
            if e.kind == EntryKind.CONF:
                self._conf_committed(e.index, decode_conf_entry(e.data).membership)
            self._since_snapshot[1] += len(data)
            self._since_snapshot[0] += 1
            applied = e.index
            if self.sm.leases.events:
                self.leases.observe(self.sm.leases, time.monotonic())
            waiter = self._waiters.pop(e.index, None)
            if waiter is not None:
                fut, term = waiter
                if fut.done():
                    continue
                if term == e.term:
                    fut.set_result(results)
                else:
                    fut.set_exception(NotLeader("entry replaced by a newer leader", self.core.lead))
        if self._apply_waiters:
            still = []
            for index, fut in self._apply_waiters:
                if index <= applied:
                    if not fut.done():
                        fut.set_result(index)
                else:
                    still.append((index, fut))
            self._apply_waiters = still
        self.watches.notify(self.sm.revision)  # wake watch polls waiting for news
        keys = len(self.sm.store)
        if keys - self._frozen_keys >= FREEZE_EVERY_KEYS:
            # Each key's history is a list the cyclic GC tracks; a store
            # growing by a million keys between snapshots made every full
            # collection walk all of them (measured: 150-400 ms loop stalls
            # every second or two while loading 1M keys, and elections).
            _settle_heap()
            self._frozen_keys = keys

    def _conf_committed(self, index: int, conf: Membership | None) -> None:
        """A configuration is committed (applied from the log or installed with
        a snapshot): remember its ids for good, and write it next to the log
        so that a cluster started again from its data directories knows
        which replicas are members (a small file, rarely written)."""
        if conf is None or not conf.members:
            return
        self.sm.note_members(conf.members)
        if index <= self._conf_written:
            return
        self._conf_written = index
        body = json.dumps({"conf_index": index, **_membership_view(conf)})
        tmp = os.path.join(self.data_dir, MEMBERS_FILE + ".tmp")
        try:
            with open(tmp, "w") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(self.data_dir, MEMBERS_FILE))
        except OSError as exc:  # advisory: the log is the record; only a cold start reads this
            log.warning("replica.members_file_failed", replica=self.index, index=index, error=repr(exc))
        if self.id not in conf.members:
            log.info("replica.removed", replica=self.index, term=self.core.term, index=index)

    def _fail_waiters(self, exc: Exception) -> None:
        for fut, _ in self._waiters.values():
            if not fut.done():
                fut.set_exception(exc)
        self._waiters.clear()
        for fut in self._read_waiters.values():
            if not fut.done():
                fut.set_exception(exc)
        self._read_waiters.clear()
        for _, fut in self._apply_waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._apply_waiters.clear()
        self.watches.wake()  # waiting watch polls answer not_leader (closed, failed, stepped down)

    def _leader_index(self) -> int | None:
        lead = self.core.lead
        return lead - 1 if lead != NONE and lead != self.id else None

    def _resolve_peer(self, peer_id: int) -> Any:
        import ray

        try:
            return ray.get_actor(actor_name(self.cluster, peer_id - 1), namespace=self.namespace)
        except ValueError:
            return None
