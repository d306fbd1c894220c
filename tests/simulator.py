"""A deterministic simulator for the Raft core.

Many `RaftCore`s in one process, driven like the replica actor drives one:
persist (to a `MemoryStorage` with crash semantics), then send, then apply.
A seeded scheduler delivers messages after random delays, drops, duplicates and
reorders them, partitions the network (symmetric, asymmetric, leader alone),
crashes replicas (possibly between writing a Ready and its fsync) and restarts
them from what they had synced. Nothing here reads a clock: one run is a pure
function of its seed, so a failing seed is a reproducible bug report.

Each replica has a small state machine: the applied commands by index (and
their terms). With `compact` set, replicas compact at random applied points
(keeping a random short tail): the snapshot bytes encode that state machine,
restarts load snapshot plus tail, and followers that fell behind get the
leader's snapshot in chunks (make `snapshot_chunk_bytes` small to have many).

After every delivery the Raft invariants are checked (paper, figure 3):
election safety, log matching, leader completeness, state machine safety
(including state restored from snapshots: every replica's state at each index
must be the one committed there); plus ReadIndex linearizability (a read point
is never below a commit known to any replica when the read was asked for) and
the cursor order snapshot <= applied <= committed <= last.

Membership changes: `add_learner()` starts a brand-new replica (empty log,
empty configuration: it waits to be contacted) and proposes it as a learner;
`promote(i)` and `remove(i)` propose those changes; refused ones are counted.
A replica that applies its own removal shuts down (is retired) as the
application would. With membership, quorums are per configuration, and these
are checked too:

* at most one configuration change is uncommitted in any leader's log;
* only voters campaign: every (pre-)vote request comes from a replica that
  is a voter in its own configuration, or is being removed by a change it
  does not know is committed (dissertation §4.2.2);
* learners never vote in an election: a replica grants a (pre-)vote only to
  a candidate whose configuration lists it as a voter;
* a new leader was granted votes by a quorum of its configuration's voters
  and is a voter of it (or is being removed, as above, and steps down when
  that commits);
* learners never count toward commit: whenever a leader's commit index moves,
  the entry there is durable on a quorum of the voters of its configuration;
* snapshots and the applied state carry the configuration in effect at
  their index.
"""

from __future__ import annotations

import heapq
import random
import struct
from dataclasses import dataclass, field

from raft_actors.core import Config, RaftCore, Role
from raft_actors.membership import ConfChange, ConfChangeRefused, ConfChangeType, Membership, decode_conf_entry
from raft_actors.storage import MemoryStorage
from raft_actors.types import Entry, EntryKind, Message, MessageType, PersistedState, SnapshotMeta

UNITS_PER_TICK = 10
_VOTE_TYPES = frozenset((MessageType.VOTE, MessageType.PRE_VOTE, MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP))
_SM_RECORD = struct.Struct("<QQI")  # index, term, data length; then data


class InvariantViolation(AssertionError):
    """A Raft safety property failed."""


@dataclass
class SimNode:
    id: int
    storage: MemoryStorage
    core: RaftCore | None = None
    # The state machine: every applied command by index, and its term.
    # invariant: applied holds exactly the indexes 1..last_applied
    applied: dict[int, bytes] = field(default_factory=dict)
    applied_terms: dict[int, int] = field(default_factory=dict)
    last_applied: int = 0
    checked_commit: int = 0
    installed: bool = False  # a snapshot was installed and no entry appended since
    initial: tuple[int, ...] = ()  # Config.peers it starts with (() for a replica that joined later)
    conf: Membership = Membership()  # the configuration its state machine applied last
    retired: bool = False  # applied its own removal and shut down for good
    retire_pending: bool = False

    @property
    def alive(self) -> bool:
        return self.core is not None


class Simulator:
    """Drive `n` cores with seeded faults. See the module docstring.

    Args:
        n: number of replicas (ids 1..n).
        seed: the only source of randomness.
        drop, dup: probabilities that a message is lost or delivered twice.
        max_delay: message delay is uniform in [1, max_delay] time units
            (a tick is `UNITS_PER_TICK` units).
        compact: chance that a replica whose applied index moved compacts its
            log after a Ready (0: never; the default, so that scenarios
            without snapshots keep their random sequence).
        compact_tail: a compaction keeps up to this many applied entries.
        config: keyword overrides for every replica's `Config`.
    """

    def __init__(self, n: int = 3, seed: int = 0, *, drop: float = 0.0, dup: float = 0.0,
                 max_delay: int = 5, crash_unsynced: float = 0.5, compact: float = 0.0, compact_tail: int = 4,
                 **config: object) -> None:
        self.n = n
        self.seed = seed
        self.rng = random.Random(seed)
        self.drop = drop
        self.dup = dup
        self.max_delay = max_delay
        self.crash_unsynced = crash_unsynced
        self.crash_before_sync = 0.0  # chance a leader dies between early send and fsync
        self.compact = compact
        self.compact_tail = compact_tail
        self.config_overrides = config
        first = tuple(range(1, n + 1))
        self.initial = Membership(first)
        self.nodes = {i: SimNode(i, MemoryStorage(), initial=first) for i in first}
        self.now = 0
        self._queue: list[tuple[int, int, Message]] = []
        self._seq = 0
        self.blocked: set[tuple[int, int]] = set()  # (src, dst) pairs that cannot talk
        self.drop_if = None  # optional predicate: a message it returns True for is lost
        self.sent: list[Message] = []  # every message handed to the network, for scenario tests
        self.record = False
        self.leaders: dict[int, int] = {}  # term -> leader id (election safety)
        self.entry_map: dict[tuple[int, int], tuple[bytes, int]] = {}  # (index, term) -> (data, prev term)
        self.committed: dict[int, tuple[int, bytes]] = {}  # index -> (term, data)
        self.proposed: list[bytes] = []
        self.reads_issued: dict[bytes, int] = {}  # context -> min acceptable index
        self.reads_done = 0
        self.stats = {"delivered": 0, "dropped": 0, "crashes": 0, "partitions": 0, "elections": 0,
                      "compactions": 0, "snap_chunks": 0, "snap_chunks_lost": 0, "snap_nacks": 0,
                      "snap_installs": 0, "snap_kept_tail": 0, "snap_appends_after": 0,
                      "snap_cut_by_new_term": 0, "snap_cut_by_crash": 0, "snap_restarts_loaded": 0,
                      "snap_replaced_log": 0,
                      "conf_proposed": 0, "conf_refused": 0, "conf_committed": 0, "conf_reverted": 0,
                      "learners_added": 0, "promotions": 0, "removals": 0, "leader_removals": 0, "retired": 0,
                      "learner_snap_installs": 0, "learner_votes": 0, "leader_being_removed": 0}
        self.refusals: dict[str, int] = {}  # reason -> count
        self.last_refusal: ConfChangeRefused | None = None
        # Membership bookkeeping (all from what the replicas sent, persisted or committed):
        self.conf_entries: dict[tuple[int, int], Membership] = {}  # (index, term) of a CONF entry -> its conf
        self.conf_commits: dict[int, tuple[ConfChange, Membership]] = {}  # committed CONF entries by index
        self.removed: set[int] = set()  # ids whose removal is committed
        self.vote_asks: dict[tuple[int, int, int], set[int]] = {}  # (request type, term, candidate) -> voters asked
        self.granted: dict[tuple[int, int], set[int]] = {}  # (term, candidate) -> who granted a real vote
        self._restart_counter = 0
        self._peers: tuple[int, ...] | None = None  # cache of `peers`
        for i in first:
            self.restart(i)

    @property
    def peers(self) -> tuple[int, ...]:
        """Every replica that exists and has not been retired."""
        if self._peers is None:
            self._peers = tuple(i for i, nd in self.nodes.items() if not nd.retired)
        return self._peers

    # -- lifecycle -------------------------------------------------------
    def restart(self, i: int) -> None:
        node = self.nodes[i]
        if node.retired:
            raise AssertionError(f"replica {i} was removed and shut down; it does not come back")
        self._restart_counter += 1
        cfg = Config(id=i, peers=node.initial, **self.config_overrides)  # type: ignore[arg-type]
        rng = random.Random(self.seed * 1_000_003 + self._restart_counter * 7919 + i)
        persisted = node.storage.load()
        node.core = RaftCore(cfg, persisted, rng)
        # The state machine is rebuilt from the snapshot, then the log.
        node.applied, node.applied_terms, node.last_applied = {}, {}, 0
        node.conf = Membership(node.initial)
        node.installed = False
        if persisted.snapshot.index:
            if persisted.snapshot_data is None:
                raise InvariantViolation(f"replica {i} restarts at snapshot {persisted.snapshot} without its data")
            self._restore(node, persisted.snapshot, persisted.snapshot_data)
            self._check_snapshot(node)
            self.stats["snap_restarts_loaded"] += 1
        node.checked_commit = min(node.checked_commit, node.core.log.committed)

    def crash(self, i: int, unsynced_ready=None) -> None:
        node = self.nodes[i]
        if node.core is None:
            return
        if node.core._incoming is not None:
            self.stats["snap_cut_by_crash"] += 1
        if unsynced_ready is not None:
            if unsynced_ready.hard_state is not None:
                node.storage.set_hard_state(unsynced_ready.hard_state)
            node.storage.append(unsynced_ready.entries)
        elif self.rng.random() < self.crash_unsynced and node.core.has_ready():
            # Die after writing a Ready but before its fsync: the write is lost.
            # A snapshot in it is saved (that is atomic) or not at all.
            rd = node.core.ready()
            if rd.snapshot is None or self.rng.random() < 0.5:
                if rd.snapshot is not None:
                    node.storage.save_snapshot(rd.snapshot.meta, rd.snapshot.data)
                if rd.hard_state is not None:
                    node.storage.set_hard_state(rd.hard_state)
                node.storage.append(rd.entries)
        node.storage.crash()
        node.core = None
        self.stats["crashes"] += 1

    # -- network ---------------------------------------------------------
    def partition(self, *groups: list[int]) -> None:
        """Nodes in different groups cannot reach each other (both ways)."""
        self.blocked = set()
        where = {n: g for g, members in enumerate(groups) for n in members}
        ids = self.peers
        for a in ids:
            for b in ids:
                if a != b and where.get(a, -1) != where.get(b, -2):
                    self.blocked.add((a, b))
        self.stats["partitions"] += 1

    def block(self, src: int, dst: int) -> None:
        """One-way cut: messages from src to dst are lost."""
        self.blocked.add((src, dst))

    def isolate(self, i: int) -> None:
        self.partition([i], [p for p in self.peers if p != i])

    def heal(self) -> None:
        self.blocked = set()

    def _send(self, m: Message) -> None:
        if self.record:
            self.sent.append(m)
        if m.type in _VOTE_TYPES:
            self._check_vote_message(m)
        if m.type == MessageType.SNAP:
            self.stats["snap_chunks"] += 1
        elif m.type == MessageType.SNAP_RESP and m.reject:
            self.stats["snap_nacks"] += 1
        if self._lost(m) or self.rng.random() < self.drop:
            self.stats["dropped"] += 1
            if m.type == MessageType.SNAP:
                self.stats["snap_chunks_lost"] += 1
            return
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            self._seq += 1
            heapq.heappush(self._queue, (self.now + self.rng.randint(1, self.max_delay), self._seq, m))

    def _lost(self, m: Message) -> bool:
        return (m.src, m.dst) in self.blocked or (self.drop_if is not None and self.drop_if(m))

    # -- driving ---------------------------------------------------------
    def process(self, i: int) -> bool:
        """Handle one replica's Ready the way the actor does: persist, send, apply.

        Returns False when there was nothing to do."""
        node = self.nodes[i]
        core = node.core
        if core is None or not core.has_ready():
            return False
        rd = core.ready()
        for e in rd.entries:
            prev = core.log.term(e.index - 1)
            self._check_entry(e, prev if prev is not None else -1)
            if e.kind == EntryKind.CONF:
                self.conf_entries[(e.index, e.term)] = decode_conf_entry(e.data).membership
        if rd.early_send:
            for m in rd.messages:
                self._send(m)
            if rd.entries and self.rng.random() < self.crash_before_sync:
                # The leader's appends are out, its own fsync never happens.
                self.crash(i, unsynced_ready=rd)
                return True
        if rd.snapshot is not None:
            node.storage.save_snapshot(rd.snapshot.meta, rd.snapshot.data)  # before the entries after it
        if rd.hard_state is not None:
            node.storage.set_hard_state(rd.hard_state)
        node.storage.append(rd.entries)
        node.storage.sync()
        if not rd.early_send:
            for m in rd.messages:
                self._send(m)
        if rd.snapshot is not None:
            self._restore(node, rd.snapshot.meta, rd.snapshot.data)
            self._check_snapshot(node)
            self.stats["snap_installs"] += 1
            if not core.log.conf.is_voter(node.id):
                self.stats["learner_snap_installs"] += 1
            if core.log.last_index > rd.snapshot.meta.index:
                self.stats["snap_kept_tail"] += 1
            node.installed = True
        elif node.installed and rd.entries:
            self.stats["snap_appends_after"] += 1
            node.installed = False
        for e in rd.committed:
            self._apply(node, e)
        for rs in rd.read_states:
            self._check_read(rs.index, rs.context, node)
        if rd.soft_state is not None and rd.soft_state[1] == Role.LEADER:
            self._check_new_leader(core)
        was_leader, before, conf = core.role == Role.LEADER, core.log.committed, core.log.conf
        core.advance(rd)
        if was_leader and core.log.committed > before:
            self._check_commit_quorum(core, conf)
        if node.retire_pending:
            self._retire(node)
            return True
        if self.compact and core.log.applied > core.log.snapshot_index and self.rng.random() < self.compact:
            lg = core.log
            self.compact_now(node.id, max(lg.snapshot_index + 1, lg.applied - self.rng.randint(0, self.compact_tail)))
        return True

    def compact_now(self, i: int, index: int | None = None) -> SnapshotMeta | None:
        """Replica `i` snapshots its state machine at `index` (default: all it applied)
        and compacts, as an application would: core first, then storage."""
        node = self.nodes[i]
        core = node.core
        index = core.log.applied if index is None else index
        data = encode_state(node, index)
        meta = core.compact(index, data)
        if meta is not None:
            node.storage.save_snapshot(meta, data)
            self._check_snapshot(node)
            self.stats["compactions"] += 1
        return meta

    def _restore(self, node: SimNode, meta: SnapshotMeta, data: bytes) -> None:
        """Replace a replica's state machine by a snapshot's, checking it against what was committed."""
        applied, terms = decode_state(data)
        # The snapshot's configuration is the one in effect at its index: that of
        # the last CONF entry it covers, or the initial one.
        conf = self.initial
        for idx in range(meta.index, 0, -1) if self.conf_entries else ():
            found = self.conf_entries.get((idx, terms.get(idx, -1)))
            if found is not None:
                conf = found
                break
        if meta.conf != conf:
            raise InvariantViolation(f"replica {node.id}: snapshot {meta.index} records configuration {meta.conf}, "
                                     f"its state says {conf}")
        node.conf = conf
        if len(applied) != meta.index or (applied and max(applied) != meta.index):
            raise InvariantViolation(f"replica {node.id}: snapshot {meta} holds indexes {sorted(applied)[:3]}...")
        if terms.get(meta.index, 0) != meta.term:
            raise InvariantViolation(f"replica {node.id}: snapshot {meta} ends in term {terms.get(meta.index)}")
        for idx, data_at in applied.items():
            got = (terms[idx], data_at)
            seen = self.committed.setdefault(idx, got)
            if seen != got:
                raise InvariantViolation(f"state machine safety: replica {node.id} restored "
                                         f"{(terms[idx], data_at)!r} at {idx} from {meta}, committed {seen!r}")
            if seen is got and (idx, got[0]) in self.conf_entries:
                self._conf_committed(idx, data_at)
        node.applied, node.applied_terms, node.last_applied = applied, terms, meta.index

    def process_all(self) -> None:
        ids = self.peers
        for _ in range(4):  # a Ready can beget another (e.g. a single-node commit)
            busy = False
            for i in ids:
                busy = self.process(i) or busy
            if not busy:
                return

    def step_time(self) -> None:
        """Advance one time unit: deliver what is due, tick on tick boundaries."""
        self.now += 1
        due: list[Message] = []
        while self._queue and self._queue[0][0] <= self.now:
            due.append(heapq.heappop(self._queue)[2])
        self.rng.shuffle(due)
        for m in due:
            node = self.nodes[m.dst]
            if node.core is None or self._lost(m):
                if m.type == MessageType.SNAP:
                    self.stats["snap_chunks_lost"] += 1
                continue  # a partition also loses what was in flight
            core = node.core
            partial = core._incoming
            had_term = core.log.term(m.index) if m.type == MessageType.SNAP and m.snap_done else None
            was_leader, before, conf = core.role == Role.LEADER, core.log.committed, core.log.conf
            top = core.log._confs[-1] if m.type in (MessageType.APP, MessageType.SNAP) else None
            core.step(m)
            if was_leader and core.log.committed > before:
                self._check_commit_quorum(core, conf)
            if top is not None and top[0] > core.log.snapshot_index and top not in core.log._confs:
                self.stats["conf_reverted"] += 1  # an uncommitted CONF entry was truncated
            if partial is not None and node.core.term > partial.key[0]:
                self.stats["snap_cut_by_new_term"] += 1  # a transfer cut short by a new leader's term
            if had_term not in (None, m.log_term) and node.core.log.snapshot_index == m.index:
                self.stats["snap_replaced_log"] += 1  # installed over a log that disagreed at its index
            self.stats["delivered"] += 1
            self.process(m.dst)
            self.check()
        if self.now % UNITS_PER_TICK == 0:
            for node in self.nodes.values():
                if node.core is not None:
                    node.core.tick()
        self.process_all()
        self.check()

    def run(self, ticks: int) -> None:
        for _ in range(ticks * UNITS_PER_TICK):
            self.step_time()

    def run_until(self, predicate, max_ticks: int) -> bool:
        for _ in range(max_ticks * UNITS_PER_TICK):
            if predicate():
                return True
            self.step_time()
        return predicate()

    def elect(self, i: int, max_ticks: int = 30) -> None:
        """Make replica `i` campaign now, as if every lease had run out; require it wins."""
        for node in self.nodes.values():
            if node.core is not None and node.id != i:
                node.core.election_elapsed = node.core.config.election_tick
        self.nodes[i].core.campaign()
        self.process(i)
        if not self.run_until(lambda: self.nodes[i].core is not None and self.nodes[i].core.role == Role.LEADER, max_ticks):
            raise AssertionError(f"replica {i} did not win: {self.nodes[i].core.status()}")

    def core(self, i: int) -> RaftCore:
        core = self.nodes[i].core
        assert core is not None, f"replica {i} is down"
        return core

    # -- client actions ----------------------------------------------------
    def leader(self) -> int:
        """The alive leader with the highest term, or 0."""
        best, best_term = 0, -1
        for i, node in self.nodes.items():
            if node.core is not None and node.core.role == Role.LEADER and node.core.term > best_term:
                best, best_term = i, node.core.term
        return best

    def propose(self, data: bytes | None = None, to: int | None = None) -> int | None:
        """Propose to `to` (default: the current leader). Returns the index, or None if refused."""
        to = to or self.leader()
        node = self.nodes.get(to)
        if node is None or node.core is None or node.core.role != Role.LEADER or node.core.lead_transferee:
            return None
        if data is None:
            data = b"cmd-%d" % len(self.proposed)
        self.proposed.append(data)
        index = node.core.propose([data])
        self.process(to)
        return index

    def conf_change(self, change: ConfChange, to: int | None = None) -> int | None:
        """Propose a membership change to `to` (default: the leader). Returns its
        index, or None when refused (`last_refusal` says why) or nobody leads."""
        to = to or self.leader()
        node = self.nodes.get(to)
        if node is None or node.core is None:
            return None
        core = node.core
        self.stats["conf_proposed"] += 1
        try:
            index = core.propose_conf_change(change)
        except ConfChangeRefused as exc:
            self.last_refusal = exc
            self.stats["conf_refused"] += 1
            self.refusals[exc.reason] = self.refusals.get(exc.reason, 0) + 1
            return None
        if core.log.pending_confs() > 1:
            raise InvariantViolation(f"leader {to} appended a second uncommitted configuration change")
        kind = {ConfChangeType.ADD_LEARNER: "learners_added", ConfChangeType.PROMOTE: "promotions",
                ConfChangeType.REMOVE: "removals"}[change.type]
        self.stats[kind] += 1
        if change.type == ConfChangeType.REMOVE and change.node_id == to:
            self.stats["leader_removals"] += 1
        self.process(to)
        return index

    def new_node(self) -> int:
        """Start a brand-new replica: empty log, empty configuration (it knows no
        voters, so it never campaigns); it waits for a leader to add it."""
        i = max(self.nodes) + 1
        self.nodes[i] = SimNode(i, MemoryStorage(), initial=())
        self._peers = None
        self.restart(i)
        return i

    def add_learner(self, to: int | None = None, i: int | None = None) -> int | None:
        """Propose replica `i` (default: a new one, started now) as a learner.
        Returns its id, or None when the change was refused (a replica started
        here is then discarded)."""
        started = i is None
        i = self.new_node() if i is None else i
        if self.conf_change(ConfChange.add_learner(i), to) is None:
            if started:
                del self.nodes[i]  # nobody was told about it
                self._peers = None
            return None
        return i

    def promote(self, i: int, to: int | None = None) -> int | None:
        return self.conf_change(ConfChange.promote(i), to)

    def remove(self, i: int, to: int | None = None) -> int | None:
        return self.conf_change(ConfChange.remove(i), to)

    def committed_conf(self) -> Membership:
        """The configuration of the last committed CONF entry (the initial one if none)."""
        return self.conf_commits[max(self.conf_commits)][1] if self.conf_commits else self.initial

    def members(self) -> set[int]:
        return set(self.committed_conf().members)

    def _retire(self, node: SimNode) -> None:
        """The replica applied its own removal: its application shuts it down for good."""
        node.core = None
        node.retired = True
        node.retire_pending = False
        self._peers = None
        self.stats["retired"] += 1

    def read(self, to: int | None = None) -> bytes | None:
        to = to or self.leader()
        node = self.nodes.get(to)
        if node is None or node.core is None:
            return None
        ctx = b"read-%d" % len(self.reads_issued)
        self.reads_issued[ctx] = max((n.core.log.committed for n in self.nodes.values() if n.core), default=0)
        node.core.read_index(ctx)
        return ctx

    # -- invariants --------------------------------------------------------
    def check(self) -> None:
        for i, node in self.nodes.items():
            core = node.core
            if core is None:
                continue
            if core.role == Role.LEADER:
                prev = self.leaders.setdefault(core.term, i)
                if prev != i:
                    raise InvariantViolation(f"election safety: term {core.term} has leaders {prev} and {i}")
                if len(core.log._confs) > 1 and core.log.pending_confs() > 1:
                    raise InvariantViolation(f"leader {i} term {core.term} has {core.log.pending_confs()} "
                                             "uncommitted configuration changes in its log")
            lg = core.log
            first, applied, committed = lg.snapshot_index, lg.applied, lg.committed
            last = first + len(lg.entries)
            if not (first <= applied <= committed <= last and first <= lg.stable <= last
                    and node.last_applied == applied):
                raise InvariantViolation(f"replica {i}: snapshot {first} applied {applied} (state machine "
                                         f"{node.last_applied}) commit {committed} stable {lg.stable} last {last}")
            # every committed prefix agrees across replicas (state machine safety);
            # what a snapshot covers is checked in the state machine it restored
            if committed > node.checked_commit:
                for idx in range(node.checked_commit + 1, committed + 1):
                    if idx <= first:
                        got = (node.applied_terms[idx], node.applied[idx])
                    else:
                        e = lg.entries[idx - first - 1]
                        got = (e.term, e.data)
                    seen = self.committed.setdefault(idx, got)
                    if seen != got:
                        raise InvariantViolation(f"replica {i} committed {got!r} at {idx}, others {seen!r}")
                    if seen is got and (idx, got[0]) in self.conf_entries:
                        self._conf_committed(idx, got[1])
                node.checked_commit = committed

    def _conf_committed(self, index: int, data: bytes) -> None:
        entry = decode_conf_entry(data)
        self.conf_commits[index] = (entry.change, entry.membership)
        self.stats["conf_committed"] += 1
        if entry.change.type == ConfChangeType.REMOVE:
            self.removed.add(entry.change.node_id)

    def _check_vote_message(self, m: Message) -> None:
        """Only voters campaign; a replica votes only where the candidate counts it as a voter."""
        t = m.type
        if t in (MessageType.VOTE, MessageType.PRE_VOTE):
            lg = self.nodes[m.src].core.log
            conf = lg.conf
            being_removed = lg.conf_index > lg.committed and lg.prev_conf.is_voter(m.src)
            if not conf.is_voter(m.src) and not being_removed:
                raise InvariantViolation(f"replica {m.src} campaigns for term {m.term} but is not a voter of {conf}")
            self.vote_asks.setdefault((t, m.term, m.src), set()).update(conf.voters)
        elif not m.reject:
            ask = MessageType.VOTE if t == MessageType.VOTE_RESP else MessageType.PRE_VOTE
            asked = self.vote_asks.get((ask, m.term, m.dst), ())
            if m.src not in asked:
                raise InvariantViolation(f"replica {m.src} granted a {ask.name} to {m.dst} for term {m.term}, "
                                         f"whose configuration does not count it as a voter (asked {asked})")
            voter = self.nodes[m.src].core
            if voter is not None and not voter.log.conf.is_voter(m.src):
                self.stats["learner_votes"] += 1  # promoted in the candidate's log, not yet in its own
            if t == MessageType.VOTE_RESP:
                self.granted.setdefault((m.term, m.dst), set()).add(m.src)

    def _check_commit_quorum(self, core: RaftCore, conf: Membership) -> None:
        """A leader's new commit index is durable on a quorum of its configuration's voters."""
        index = core.log.committed
        term = core.log.term(index)
        holders = []
        for v in conf.voters:
            durable = self.nodes[v].storage._durable if v in self.nodes else PersistedState()
            snap = durable.snapshot
            if index <= snap.index:
                holders.append(v)  # a snapshot covers only committed entries
            elif index - snap.index <= len(durable.entries) and durable.entries[index - snap.index - 1].term == term:
                holders.append(v)
        if len(holders) < conf.quorum:
            raise InvariantViolation(f"leader {core.id} term {core.term} committed {index} held durably by "
                                     f"only {holders} of voters {conf.voters} (quorum {conf.quorum})")

    def _check_snapshot(self, node: SimNode) -> None:
        """The snapshot a core holds sits exactly where its log starts, and the
        entries after it continue it (log matching across the snapshot point)."""
        core = node.core
        snap, lg = core.snapshot, core.log
        if snap is not None and (snap.meta.index, snap.meta.term) != (lg.snapshot_index, lg.snapshot_term):
            raise InvariantViolation(f"replica {node.id}: holds snapshot {snap.meta}, "
                                     f"log starts after {lg.snapshot_index}")
        if lg.entries:
            first = lg.entries[0]
            seen = self.entry_map.get((first.index, first.term))
            if seen is not None and seen[1] != lg.snapshot_term:
                raise InvariantViolation(f"log matching: replica {node.id} keeps entry ({first.index}, {first.term}), "
                                         f"which follows term {seen[1]}, after a snapshot of term {lg.snapshot_term}")

    def _check_entry(self, e: Entry, prev_term: int) -> None:
        # Log matching: one (index, term) names one entry with one predecessor term.
        seen = self.entry_map.setdefault((e.index, e.term), (e.data, prev_term))
        if seen != (e.data, prev_term):
            raise InvariantViolation(f"log matching: ({e.index}, {e.term}) is {seen!r} and {(e.data, prev_term)!r}")

    def _apply(self, node: SimNode, e: Entry) -> None:
        expected = self.committed.get(e.index)
        if expected is not None and expected != (e.term, e.data):
            raise InvariantViolation(f"replica {node.id} applies {(e.term, e.data)!r} at {e.index}, committed {expected!r}")
        if e.index in node.applied:
            raise InvariantViolation(f"replica {node.id} applied index {e.index} twice")
        if e.index != node.last_applied + 1:
            raise InvariantViolation(f"replica {node.id} applied {e.index} out of order (after {node.last_applied})")
        node.applied[e.index] = e.data
        node.applied_terms[e.index] = e.term
        node.last_applied = e.index
        if e.kind == EntryKind.CONF:
            # The application learns its peers from committed changes; one that
            # applies its own removal shuts down.
            conf = decode_conf_entry(e.data).membership
            if conf != node.core.log.conf_at(e.index):
                raise InvariantViolation(f"replica {node.id} applies configuration {conf} at {e.index}, "
                                         f"its log says {node.core.log.conf_at(e.index)}")
            if node.id in node.conf.members and node.id not in conf.members:
                node.retire_pending = True
            node.conf = conf

    def _check_new_leader(self, core: RaftCore) -> None:
        self.stats["elections"] += 1
        conf, lg = core.log.conf, core.log
        # A leader is a voter of its configuration, or is being removed by a
        # change it does not know is committed (and steps down once it is).
        being_removed = (not conf.is_voter(core.id) and lg.conf_index > lg.committed
                         and lg.prev_conf.is_voter(core.id))
        if not conf.is_voter(core.id) and not being_removed:
            raise InvariantViolation(f"replica {core.id} leads term {core.term} but is not a voter of {conf}")
        if being_removed:
            self.stats["leader_being_removed"] += 1
        votes = (self.granted.get((core.term, core.id), set()) | {core.id}) & set(conf.voters)
        if len(votes) < conf.quorum:
            raise InvariantViolation(f"replica {core.id} leads term {core.term} with votes of {sorted(votes)} only, "
                                     f"voters {conf.voters}")
        # Leader completeness: a new leader holds every committed entry.
        for idx, (term, data) in self.committed.items():
            if idx <= core.log.snapshot_index:
                continue
            if idx > core.log.last_index or core.log.entries[idx - core.log.snapshot_index - 1].term != term:
                raise InvariantViolation(f"leader completeness: leader {core.id} term {core.term} lacks committed entry {idx}")

    def _check_read(self, index: int, ctx: bytes, node: SimNode) -> None:
        floor = self.reads_issued.get(ctx)
        if floor is None:
            raise InvariantViolation(f"unknown read context {ctx!r}")
        if index < floor:
            raise InvariantViolation(f"stale read: {ctx!r} got index {index} below commit {floor} known when asked")
        self.reads_done += 1

    # -- liveness -----------------------------------------------------------
    def stabilize(self, max_ticks: int = 200) -> None:
        """Heal everything, restart the dead, and require progress within a bound."""
        self.heal()
        self.drop = 0.0
        self.crash_before_sync = 0.0
        for i, node in self.nodes.items():
            if node.core is None and not node.retired:
                self.restart(i)
        if not self.run_until(self.agreed_leader, max_ticks):
            raise InvariantViolation(f"liveness: no leader {max_ticks} ticks after healing")
        # A leader that keeps its quorum must commit a proposal within the bound.
        # An old leader's proposal may be lost to a newer leader: retry then.
        marker = b"marker-%d" % self.now
        pending: tuple[int, int] | None = None  # (index, term) of the marker in flight
        for _ in range(max_ticks * UNITS_PER_TICK):
            ldr = self.agreed_leader()
            if pending is not None:
                index, term = pending
                if self.committed.get(index) == (term, marker):
                    # every member of the committed configuration applied it (a
                    # removed replica that never heard of its removal may linger)
                    members = self.members()
                    if all(n.core and n.core.log.applied >= index for n in self.nodes.values() if n.id in members):
                        self.check_state_machines()
                        return
                elif not ldr or self.nodes[ldr].core.term != term:
                    pending = None  # lost with its leader; propose again
            elif ldr:
                index = self.propose(marker, ldr)
                if index is not None:
                    pending = (index, self.nodes[ldr].core.term)
            self.step_time()
        status = {i: n.core.status() for i, n in self.nodes.items() if n.core}
        raise InvariantViolation(f"liveness: no proposal committed everywhere within {max_ticks} ticks: {status}")

    def check_state_machines(self) -> None:
        """Every live replica's state machine holds, at each index, what was committed there."""
        for node in self.nodes.values():
            if node.core is None:
                continue
            for idx in range(1, node.last_applied + 1):
                got = (node.applied_terms[idx], node.applied[idx])
                if self.committed.get(idx) != got:
                    raise InvariantViolation(f"replica {node.id} state at {idx} is {got!r}, "
                                             f"committed {self.committed.get(idx)!r}")

    def agreed_leader(self) -> int:
        """The leader every live member of the committed configuration follows in one term, or 0."""
        ldr = self.leader()
        if not ldr:
            return 0
        term = self.nodes[ldr].core.term
        members = self.members()
        ok = all(n.core is None or n.id not in members or (n.core.lead == ldr and n.core.term == term)
                 for n in self.nodes.values())
        return ldr if ok else 0


def encode_state(node: SimNode, upto: int) -> bytes:
    """The simulator state machine's snapshot at `upto`: (index, term, data) records."""
    pack, applied, terms = _SM_RECORD.pack, node.applied, node.applied_terms
    return b"".join(pack(i, terms[i], len(applied[i])) + applied[i] for i in range(1, upto + 1))


def decode_state(data: bytes) -> tuple[dict[int, bytes], dict[int, int]]:
    applied: dict[int, bytes] = {}
    terms: dict[int, int] = {}
    pos, size, unpack = 0, _SM_RECORD.size, _SM_RECORD.unpack_from
    while pos < len(data):
        index, term, n = unpack(data, pos)
        pos += size
        applied[index] = data[pos : pos + n]
        terms[index] = term
        pos += n
    return applied, terms


MAX_CHURN_REPLICAS = 7  # live members at most, in membership churn
CHURN_SEEDS = 0.3  # the fraction of random seeds with membership churn


def random_run(seed: int, ticks: int = 120) -> Simulator:
    """One randomized run: faults for `ticks`, then heal and require progress.

    About `CHURN_SEEDS` of the seeds also change membership all along: add
    learners (brand-new replicas), promote them (refused while they lag),
    remove members (the leader too), while crashes and partitions go on.
    """
    rng = random.Random(seed)
    n = rng.choice((3, 3, 5))
    drop, dup, max_delay = rng.choice((0.0, 0.02, 0.1)), rng.choice((0.0, 0.05)), rng.choice((2, 5, 15))
    churn = random.Random(seed ^ 0x5EED).random() < CHURN_SEEDS  # (its own stream: other seeds run as before)
    extra = {"promote_max_lag": rng.choice((0, 2, 10))} if churn else {}
    if churn and n == 5:
        n = rng.choice((1, 3, 5))  # single-voter starts too
    # Snapshots: most seeds compact, in small chunks with small windows.
    sim = Simulator(n, seed, drop=drop, dup=dup, max_delay=max_delay,
                    compact=rng.choice((0.0, 0.02, 0.05, 0.2)), compact_tail=rng.choice((0, 2, 8)),
                    snapshot_chunk_bytes=rng.choice((64, 256, 2048)),
                    max_inflight_snapshot_chunks=rng.choice((1, 2, 4)),
                    snapshot_retry_ticks=rng.choice((0, 3)), **extra)
    sim.crash_before_sync = rng.choice((0.0, 0.01))
    for unit in range(ticks * UNITS_PER_TICK):
        r = sim.rng.random()
        if r < 0.004:
            alive = [i for i, nd in sim.nodes.items() if nd.core is not None]
            if alive:
                sim.crash(sim.rng.choice(alive))
        elif r < 0.010:
            dead = [i for i, nd in sim.nodes.items() if nd.core is None and not nd.retired]
            if dead:
                sim.restart(sim.rng.choice(dead))
        elif r < 0.013:
            ids = list(sim.peers)
            if len(ids) > 1:
                sim.rng.shuffle(ids)
                cut = sim.rng.randint(1, len(ids) - 1)
                sim.partition(ids[:cut], ids[cut:])
        elif r < 0.015 and sim.leader():
            sim.isolate(sim.leader())
        elif r < 0.017:
            if len(sim.peers) > 1:
                a, b = sim.rng.sample(sim.peers, 2)
                sim.block(a, b)
        elif r < 0.022:
            sim.heal()
        elif r < 0.024 and sim.leader():
            ldr = sim.leader()
            others = [p for p in sim.core(ldr).membership.voters if p != ldr]
            target = sim.rng.choice(others) if others else ldr
            try:
                sim.nodes[ldr].core.transfer_leadership(target)
            except Exception:
                pass
        elif r < 0.10:
            sim.propose()
        elif r < 0.13:
            sim.read(sim.rng.choice(sim.peers))
        elif churn and r < 0.145:
            _churn(sim)
        sim.step_time()
    sim.stabilize()
    return sim


def _churn(sim: Simulator) -> None:
    """One random membership change, proposed to the current leader (if any)."""
    ldr = sim.leader()
    if not ldr:
        return
    conf = sim.core(ldr).membership
    r = sim.rng.random()
    if r < 0.35:
        if len(conf.members) < MAX_CHURN_REPLICAS:
            sim.add_learner(ldr)
    elif r < 0.7:
        if conf.learners:
            sim.promote(sim.rng.choice(conf.learners), ldr)
    else:
        # any member: a voter, a learner, the leader itself (refused if it
        # would lose quorum, or if it is the last voter)
        sim.remove(sim.rng.choice(conf.members), ldr)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Replay one simulator seed.")
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    s = random_run(args.seed)
    print({"seed": args.seed, **s.stats, "committed": len(s.committed), "reads": s.reads_done})
