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
"""

from __future__ import annotations

import heapq
import random
import struct
from dataclasses import dataclass, field

from raft_actors.core import Config, RaftCore, Role
from raft_actors.storage import MemoryStorage
from raft_actors.types import Entry, Message, MessageType, SnapshotMeta

UNITS_PER_TICK = 10
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
        self.peers = tuple(range(1, n + 1))
        self.nodes = {i: SimNode(i, MemoryStorage()) for i in self.peers}
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
                      "snap_replaced_log": 0}
        self._restart_counter = 0
        for i in self.peers:
            self.restart(i)

    # -- lifecycle -------------------------------------------------------
    def restart(self, i: int) -> None:
        node = self.nodes[i]
        self._restart_counter += 1
        cfg = Config(id=i, peers=self.peers, **self.config_overrides)  # type: ignore[arg-type]
        rng = random.Random(self.seed * 1_000_003 + self._restart_counter * 7919 + i)
        persisted = node.storage.load()
        node.core = RaftCore(cfg, persisted, rng)
        # The state machine is rebuilt from the snapshot, then the log.
        node.applied, node.applied_terms, node.last_applied = {}, {}, 0
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
        for a in self.peers:
            for b in self.peers:
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
        core.advance(rd)
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
        if len(applied) != meta.index or (applied and max(applied) != meta.index):
            raise InvariantViolation(f"replica {node.id}: snapshot {meta} holds indexes {sorted(applied)[:3]}...")
        if terms.get(meta.index, 0) != meta.term:
            raise InvariantViolation(f"replica {node.id}: snapshot {meta} ends in term {terms.get(meta.index)}")
        for idx, data_at in applied.items():
            seen = self.committed.setdefault(idx, (terms[idx], data_at))
            if seen != (terms[idx], data_at):
                raise InvariantViolation(f"state machine safety: replica {node.id} restored "
                                         f"{(terms[idx], data_at)!r} at {idx} from {meta}, committed {seen!r}")
        node.applied, node.applied_terms, node.last_applied = applied, terms, meta.index

    def process_all(self) -> None:
        for _ in range(4):  # a Ready can beget another (e.g. a single-node commit)
            busy = False
            for i in self.peers:
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
            partial = node.core._incoming
            had_term = node.core.log.term(m.index) if m.type == MessageType.SNAP and m.snap_done else None
            node.core.step(m)
            if partial is not None and node.core.term > partial.key[0]:
                self.stats["snap_cut_by_new_term"] += 1  # a transfer cut short by a new leader's term
            if had_term not in (None, m.log_term) and node.core.log.snapshot_index == m.index:
                self.stats["snap_replaced_log"] += 1  # installed over a log that disagreed at its index
            self.stats["delivered"] += 1
            self.process(m.dst)
            self.check()
        if self.now % UNITS_PER_TICK == 0:
            for i in self.peers:
                if self.nodes[i].core is not None:
                    self.nodes[i].core.tick()
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
                node.checked_commit = committed

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

    def _check_new_leader(self, core: RaftCore) -> None:
        self.stats["elections"] += 1
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
            if node.core is None:
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
                    if all(n.core and n.core.log.applied >= index for n in self.nodes.values()):
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
        """The leader every live replica follows in one term, or 0."""
        ldr = self.leader()
        if not ldr:
            return 0
        term = self.nodes[ldr].core.term
        ok = all(n.core is None or (n.core.lead == ldr and n.core.term == term) for n in self.nodes.values())
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


def random_run(seed: int, ticks: int = 120) -> Simulator:
    """One randomized run: faults for `ticks`, then heal and require progress."""
    rng = random.Random(seed)
    n = rng.choice((3, 3, 5))
    drop, dup, max_delay = rng.choice((0.0, 0.02, 0.1)), rng.choice((0.0, 0.05)), rng.choice((2, 5, 15))
    # Snapshots: most seeds compact, in small chunks with small windows.
    sim = Simulator(n, seed, drop=drop, dup=dup, max_delay=max_delay,
                    compact=rng.choice((0.0, 0.02, 0.05, 0.2)), compact_tail=rng.choice((0, 2, 8)),
                    snapshot_chunk_bytes=rng.choice((64, 256, 2048)),
                    max_inflight_snapshot_chunks=rng.choice((1, 2, 4)),
                    snapshot_retry_ticks=rng.choice((0, 3)))
    sim.crash_before_sync = rng.choice((0.0, 0.01))
    for unit in range(ticks * UNITS_PER_TICK):
        r = sim.rng.random()
        if r < 0.004:
            alive = [i for i, nd in sim.nodes.items() if nd.core is not None]
            if alive:
                sim.crash(sim.rng.choice(alive))
        elif r < 0.010:
            dead = [i for i, nd in sim.nodes.items() if nd.core is None]
            if dead:
                sim.restart(sim.rng.choice(dead))
        elif r < 0.013:
            ids = list(sim.peers)
            sim.rng.shuffle(ids)
            cut = sim.rng.randint(1, n - 1)
            sim.partition(ids[:cut], ids[cut:])
        elif r < 0.015 and sim.leader():
            sim.isolate(sim.leader())
        elif r < 0.017:
            a, b = sim.rng.sample(sim.peers, 2)
            sim.block(a, b)
        elif r < 0.022:
            sim.heal()
        elif r < 0.024 and sim.leader():
            ldr = sim.leader()
            target = sim.rng.choice([p for p in sim.peers if p != ldr])
            try:
                sim.nodes[ldr].core.transfer_leadership(target)
            except Exception:
                pass
        elif r < 0.10:
            sim.propose()
        elif r < 0.13:
            sim.read(sim.rng.choice(sim.peers))
        sim.step_time()
    sim.stabilize()
    return sim


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Replay one simulator seed.")
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    s = random_run(args.seed)
    print({"seed": args.seed, **s.stats, "committed": len(s.committed), "reads": s.reads_done})
