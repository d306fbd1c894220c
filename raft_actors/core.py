"""The Raft algorithm as a pure, deterministic, sans-IO state machine.

Theory of operation
-------------------
`RaftCore` is one replica's Raft logic and nothing else. It never reads a
clock, touches a file, opens a socket or calls Ray. The driver (the replica
actor in production, the deterministic simulator in tests) feeds it:

* `tick()`: one unit of logical time has passed (the driver decides how long a
  tick is). Elections and heartbeats are counted in ticks.
* `step(message)`: a message from a peer arrived.
* `propose(datas)`: the application wants commands appended (leader only).
* `read_index(ctx)`: the application wants a linearizable read point.
* `transfer_leadership(to)`: hand leadership to a caught-up peer.

and collects its output with `ready()`: hard state and entries to persist,
messages to send, committed entries to apply, read states to release. The
driver must persist before it sends (so a vote or an acknowledgement never
outlives a crash), then apply, then call `advance(ready)`.

Safety features, all on by default: PreVote (a node that cannot win does not
raise terms), CheckQuorum (a leader that cannot hear a quorum steps down, and
followers that recently heard a leader refuse to vote: the "leader lease"),
the §5.4.2 commit rule (only entries of the current term commit by counting,
so every new leader appends a no-op; in a brand-new log, that no-op is a
CONF entry recording the initial configuration), fast log backtracking by
conflict term, and flow control (pipelined appends capped in count and
bytes).

Outgoing appends and heartbeats are coalesced: proposals and commit updates
mark followers dirty, and `ready()` sends one AppendEntries per follower for
all of them; many ReadIndex requests share one heartbeat round.

Snapshots and log compaction: the application tells the core, with
`compact(index, data)`, that its state machine snapshot `data` covers every
entry up to `index`; the core drops that prefix of its log and keeps the
snapshot to send. A follower that needs entries the leader no longer has gets
the snapshot instead: InstallSnapshot as SNAP messages of at most
`snapshot_chunk_bytes` each, a window of `max_inflight_snapshot_chunks` in
flight (go-back-N: the follower asks for a resend from the first missing
byte, and a transfer without progress for `snapshot_retry_ticks` resends from
the last acknowledged chunk). A new leader, or a newer snapshot, starts the
transfer over. The follower assembles the chunks of one (leader term,
snapshot index, snapshot term), and on the last one installs the snapshot
(Raft paper, figure 13: a log that holds the snapshot's last entry keeps what
follows it, any other log is discarded), hands it to the driver in
`Ready.snapshot`, and acknowledges; the leader then probes from the
snapshot's index. A snapshot at or below the follower's commit index is never
installed (it would roll the state machine back); it is only acknowledged.

Membership changes (Raft dissertation §4.1-4.3, one server at a time, with
learners): `propose_conf_change(change)` appends a CONF entry that records
the change (`add_learner`, `promote`, `remove`) and the whole configuration
after it. Every replica uses the latest configuration in its log, committed
or not; truncating a CONF entry reverts to the previous one (the log keeps
the history, see `RaftLog.conf`). A leader appends a change only when the
previous one is committed and it has committed an entry of its own term
(the dissertation's fix for single-server changes), and refuses changes that
do not fit: see `propose_conf_change`. Learners get appends and snapshots but
never campaign, never count toward commit, CheckQuorum or ReadIndex quorums,
and so never lead; a candidate asks and counts only the voters of its
configuration.

Who campaigns: a voter of its latest configuration; and a replica whose
latest configuration removes it while that change is not yet committed as
far as it knows (dissertation §4.2.2: it may still be needed to commit the
change, e.g. when the leader that removed itself lost leadership before the
commit and has the longest log); it then asks and counts only the voters of
the new configuration, never itself, and steps down once the removal
commits. Nobody else campaigns: not learners, not replicas that know their
removal is committed, not a joining replica whose configuration is still
empty.

Who votes: a replica answers vote requests whatever its own configuration
says (dissertation §4.1): a replica whose log still calls it a learner
answers a candidate whose newer log made it a voter (otherwise a cluster that
lost its leader right after a promotion might elect nobody; etcd documents
the same case); the candidate counts that vote only because its
configuration lists the replica as a voter. But a replica refuses a
candidate that is not a voter of its own latest configuration when that
configuration is committed as far as it knows: a replica whose removal is
known to be committed does not win an election of the configuration that
removed it.

The leader keeps replicating to a replica it is removing, counting it for
nothing, until one election timeout after the removal commits, so that the
replica most likely learns of its removal (and its driver can stop it). A
leader that removes itself keeps leading until the change commits, without
counting itself toward the new quorum, then tells the others the commit
index, hands off with TimeoutNow to a caught-up voter, and steps down (a
cluster layer had better transfer leadership first). Snapshots carry the configuration at
their index (`SnapshotMeta.conf`), so it survives compaction and restarts.

Roles are methods: `_step_leader`, `_step_candidate`, `_step_follower`,
switched by `_become_*`.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import structlog

from kv.errors import NotLeader
from raft_actors.log import RaftLog
from raft_actors.membership import (
    ConfChange,
    ConfChangeNotLeader,
    ConfChangeRefused,
    ConfChangeType,
    Membership,
    Refusal,
    encode_conf_entry,
)
from raft_actors.progress import Progress, ProgressState
from raft_actors.types import (
    NONE,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType as MT,
    PersistedState,
    Ready,
    ReadState,
    Snapshot,
    SnapshotMeta,
)

__all__ = ["Config", "ConfChange", "ConfChangeNotLeader", "ConfChangeRefused", "Membership", "RaftCore", "Role"]

log = structlog.get_logger(__name__)

TRANSFER_CONTEXT = b"transfer"


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class Config:
    """Settings of one replica's core.

    Attributes:
        id: this replica's id (a positive int).
        peers: the initial voters, this one included: the configuration of a
            brand-new, empty log. Once the log or a snapshot records a
            configuration, that one is used instead. A replica joining an
            existing cluster passes `peers=()` (and no learners): it knows no
            voters, never campaigns, and waits for the leader that added it
            to send it the log. A replica passes the same `peers` on every
            restart: the founding voters, or () if it joined later.
        learners: the initial learners (usually none).
        election_tick: ticks without a leader before a follower campaigns; the
            actual timeout is drawn from [election_tick, 2 * election_tick).
        heartbeat_tick: ticks between leader heartbeats (< election_tick).
        pre_vote, check_quorum: see the module docstring; on by default.
        max_inflight_msgs, max_inflight_bytes: flow-control caps per follower.
        max_msg_bytes: soft cap on entry bytes in one AppendEntries.
        applied: the application's applied index at start (0: replay from the
            snapshot point).
        snapshot_chunk_bytes: snapshot data bytes in one SNAP message.
        max_inflight_snapshot_chunks: SNAP messages in flight per follower.
        snapshot_retry_ticks: ticks without progress after which a snapshot
            transfer resends from the last acknowledged chunk (0: election_tick).
        promote_max_lag: a learner is promoted only when its log is within
            this many entries of the leader's last entry, holds the current
            configuration's entry, and it answered within the last election
            timeout; otherwise the promotion is refused, to be retried.
    """

    id: int
    peers: tuple[int, ...]
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 64 * 1024 * 1024
    max_msg_bytes: int = 1024 * 1024
    applied: int = 0
    snapshot_chunk_bytes: int = 1024 * 1024
    max_inflight_snapshot_chunks: int = 4
    snapshot_retry_ticks: int = 0
    learners: tuple[int, ...] = ()
    promote_max_lag: int = 1000

    def __post_init__(self) -> None:
        if self.id <= 0:
            raise ValueError("replica ids are positive integers")
        if (self.peers or self.learners) and self.id not in self.peers + self.learners:
            raise ValueError(f"replica {self.id} is not among the peers {self.peers} or learners {self.learners} "
                             "(a replica joining a running cluster passes peers=())")
        if len(set(self.peers)) != len(self.peers):
            raise ValueError(f"duplicate peer ids in {self.peers}")
        Membership(self.peers, self.learners)  # raises ValueError on overlaps or bad ids
        if self.promote_max_lag < 0:
            raise ValueError("need promote_max_lag >= 0")
        if not 0 < self.heartbeat_tick < self.election_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if self.snapshot_chunk_bytes <= 0 or self.max_inflight_snapshot_chunks <= 0 or self.snapshot_retry_ticks < 0:
            raise ValueError("need snapshot_chunk_bytes > 0, max_inflight_snapshot_chunks > 0, "
                             "snapshot_retry_ticks >= 0")


@dataclass(slots=True)
class _PendingRead:
    context: bytes
    index: int
    requester: int
    acks: set[int]


@dataclass(slots=True)
class _IncomingSnapshot:
    """A follower's partly received snapshot: the bytes from offset 0 on."""

    key: tuple[int, int, int]  # (leader term, snapshot index, snapshot term)
    buf: bytearray
    nacked: int = -1  # the offset we last asked a resend from (ask once per gap)


class RaftCore:
    """One replica's Raft state machine. See the module docstring."""

    def __init__(self, config: Config, persisted: PersistedState | None = None, rng: random.Random | None = None) -> None:
        persisted = persisted or PersistedState()
        self.config = config
        self.id = config.id
        self.rng = rng if rng is not None else random.Random(config.id)
        self.log = RaftLog(persisted, config.applied, Membership(config.peers, config.learners))
        # The newest snapshot we hold (our own, installed, or loaded): what we
        # send a follower that is behind our log. None when there is no data
        # (no snapshot yet, or compaction recorded without it).
        # invariant: _snapshot is None or _snapshot.meta.index == log.snapshot_index
        self._snapshot: Snapshot | None = None
        if persisted.snapshot.index > 0 and persisted.snapshot_data is not None:
            # (a snapshot saved before configurations were recorded gets the assumed one)
            meta = replace(persisted.snapshot, conf=self.log.conf_at(persisted.snapshot.index))
            self._snapshot = Snapshot(meta, persisted.snapshot_data)
        self._pending_snapshot: Snapshot | None = None  # installed, not yet handed out in a Ready
        self._incoming: _IncomingSnapshot | None = None  # follower: chunks assembled so far
        self._retry_ticks = config.snapshot_retry_ticks or config.election_tick
        hs = persisted.hard_state
        self.term = hs.term
        self.vote = hs.vote
        self.lead = NONE
        self.role = Role.FOLLOWER
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = config.election_tick
        self._ticks = 0  # ticks since this core started (for "heard from recently")
        self.votes: dict[int, bool] = {}
        self.progress: dict[int, Progress] = {}
        self.lead_transferee = NONE
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self._reads: list[_PendingRead] = []  # queued ReadIndex rounds, oldest first
        self._reads_waiting_commit: list[tuple[bytes, int]] = []  # until our term has a commit
        self._reads_unsent = False
        self._dirty: set[int] = set()  # followers owed an AppendEntries at the next ready()
        # leader: removed replicas still sent the log until this tick (see _conf_committed)
        self._leaving: dict[int, int] = {}
        self._prev_hard = hs
        self._prev_soft = (NONE, Role.FOLLOWER)
        self._ready_out = False
        self._step_role: Callable[[Message], None] = self._step_follower
        self._tick_role: Callable[[], None] = self._tick_election
        self._become_follower(self.term, NONE)

    # ------------------------------------------------------------------
    # Public inputs
    # ------------------------------------------------------------------
    def tick(self) -> None:
        """Advance logical time by one tick."""
        self._ticks += 1
        self._tick_role()

    def campaign(self) -> None:
        """Start an election now (as if the election timeout fired)."""
        self.step(Message(MT.HUP, self.id, self.id))

    def propose(self, datas: Sequence[bytes], kind: EntryKind = EntryKind.NORMAL) -> int:
        """Append commands to the log (leader only).

        Args:
            datas: one command batch per entry.
            kind: the entries' kind; not `EntryKind.CONF` (use
                `propose_conf_change`).
        Returns:
            The index of the first new entry; entry i gets index first + i.
        Raises:
            NotLeader: this replica is not the leader, or is handing leadership
                over; `leader_hint` names the leader when known.
            ValueError: kind is CONF.
        """
        if kind == EntryKind.CONF:
            raise ValueError("membership changes go through propose_conf_change(), not propose()")
        if self.role != Role.LEADER:
            raise NotLeader(f"replica {self.id} is not the leader", self.lead)
        if self.lead_transferee != NONE:
            raise NotLeader(f"leadership is moving to replica {self.lead_transferee}", self.lead_transferee)
        first = self.log.last_index + 1
        if datas:
            self._append([Entry(self.term, first + i, d, kind) for i, d in enumerate(datas)])
        return first

    def propose_conf_change(self, change: ConfChange) -> int:
        """Append a membership change (leader only); it takes effect at once.

        Every replica, this one included, uses the configuration in the
        entry as soon as the entry is in its log; it is durable once the entry
        commits, and reaches the application in `Ready.committed` as an entry
        of kind `EntryKind.CONF` (decode it with
        `raft_actors.membership.decode_conf_entry`). A new learner is sent
        the log (or the snapshot) from now on: the driver's transport must be
        able to reach it before the change commits.

        Args:
            change: `ConfChange.add_learner(id)`, `.promote(id)` or `.remove(id)`.
        Returns:
            The index of the CONF entry. The change is in force for good once
            that index is committed; a new leader may drop it before then
            (the configuration then reverts), and the caller should check
            the configuration and retry.
        Raises:
            ConfChangeNotLeader: not the leader, or leadership is being
                transferred (a `NotLeader` too; `leader_hint` names whom to ask).
            ConfChangeRefused: nothing was appended; `reason` says why:
                TERM_NOT_COMMITTED: this leader has not committed an entry of
                    its own term yet (retry shortly);
                PENDING: an earlier change is not committed yet (one at a
                    time; retry once it is);
                NOT_LEARNER / ALREADY_MEMBER / NOT_MEMBER / LAST_VOTER /
                    INVALID: the change does not fit the configuration;
                LEARNER_BEHIND: promoting a learner whose log is more than
                    `Config.promote_max_lag` entries behind, or does not
                    reach the current configuration's entry yet, or that has
                    not answered within the last election timeout (retry later);
                WOULD_LOSE_QUORUM: the voters of the new configuration that
                    answered within the last election timeout (the leader
                    counts itself if it stays a voter) are not a quorum of it.
        """
        if self.role != Role.LEADER:
            raise ConfChangeNotLeader(f"replica {self.id} is not the leader", Refusal.NOT_LEADER, self.lead)
        if self.lead_transferee != NONE:
            raise ConfChangeNotLeader(f"leadership is moving to replica {self.lead_transferee}",
                                      Refusal.TRANSFERRING, self.lead_transferee)
        lg = self.log
        if lg.term(lg.committed) != self.term:
            raise ConfChangeRefused(f"leader {self.id} has not committed an entry of its term {self.term} yet; "
                                    "retry shortly", Refusal.TERM_NOT_COMMITTED, self.id)
        if lg.conf_index > lg.committed:
            raise ConfChangeRefused(f"the configuration change at index {lg.conf_index} is not committed yet "
                                    f"(commit {lg.committed}); one change at a time, retry once it is",
                                    Refusal.PENDING, self.id)
        old = lg.conf
        new = old.apply(change)  # refuses changes that do not fit the configuration
        target = change.node_id
        window = self.config.election_tick
        if change.type == ConfChangeType.PROMOTE:
            pr = self.progress[target]
            behind = lg.last_index - pr.match
            if (behind > self.config.promote_max_lag or pr.match < lg.conf_index
                    or not pr.responsive(self._ticks, window)):
                raise ConfChangeRefused(
                    f"learner {target} has not caught up ({behind} entries behind, at most "
                    f"{self.config.promote_max_lag} allowed, and it must hold the configuration at "
                    f"{lg.conf_index}; answered recently: {pr.responsive(self._ticks, window)}); retry later",
                    Refusal.LEARNER_BEHIND, self.id)
        if new.voters != old.voters:
            live = [v for v in new.voters if v == self.id or (v in self.progress
                                                               and self.progress[v].responsive(self._ticks, window))]
            if len(live) < new.quorum:
                raise ConfChangeRefused(
                    f"{change.type.name.lower()} {target} would leave voters {new.voters} needing {new.quorum} "
                    f"for a quorum, but only {live} answered within the last {window} ticks",
                    Refusal.WOULD_LOSE_QUORUM, self.id)
        index = lg.last_index + 1
        self._append([Entry(self.term, index, encode_conf_entry(change, new), EntryKind.CONF)])
        for p in new.members:
            if p not in self.progress or p in self._leaving:
                # a new learner: probe from the CONF entry on; it will say how far back it must go
                self._leaving.pop(p, None)
                pr = Progress(index, self.config.max_inflight_msgs, self.config.max_inflight_bytes)
                self.progress[p] = pr
                self._dirty.add(p)
        log.info("raft.conf_change_proposed", replica=self.id, term=self.term, index=index,
                 change=change.type.name.lower(), node=target, voters=new.voters, learners=new.learners)
        return index

    @property
    def membership(self) -> Membership:
        """The configuration this replica uses: the latest in its log, committed or not."""
        return self.log.conf

    def snapshot_meta(self, index: int) -> SnapshotMeta:
        """The `SnapshotMeta` a snapshot of the state machine at `index` gets
        (what `compact(index, ...)` returns): position and configuration.
        For writing the snapshot file ahead of `compact` (`prepare_snapshot`).

        Raises:
            ValueError: `index` is compacted already or past the last entry.
        """
        term = self.log.term(index)
        if term is None or index < self.log.snapshot_index:
            raise ValueError(f"no entry at {index} (log holds {self.log.snapshot_index}..{self.log.last_index})")
        return SnapshotMeta(index, term, self.log.conf_at(index))

    def read_index(self, context: bytes) -> bool:
        """Ask for a linearizable read point identified by `context` (unique bytes).

        The answer comes later as a `ReadState(index, context)` in a Ready: once
        the application has applied `index`, a read reflects every write
        acknowledged before this call. Returns False when the request was
        dropped (no leader known); the caller should retry or fail.
        """
        if self.role == Role.LEADER:
            self._leader_read(context, self.id)
            return True
        if self.lead == NONE:
            return False
        self._send(Message(MT.READ_INDEX, self.id, self.lead, context=context))
        return True

    def transfer_leadership(self, to: int) -> None:
        """Hand leadership to `to` once it has caught up (TimeoutNow).

        Proposals are refused while the transfer is in progress; it is abandoned
        after one election timeout.
        """
        if self.role != Role.LEADER:
            raise NotLeader(f"replica {self.id} is not the leader", self.lead)
        if to == self.id or to not in self.progress or not self.log.conf.is_voter(to):
            raise ValueError(f"cannot transfer leadership to {to}: not another voter")
        self.lead_transferee = to
        self.election_elapsed = 0
        log.info("raft.transfer_start", replica=self.id, term=self.term, to=to)
        if self.progress[to].match == self.log.last_index:
            self._send(Message(MT.TIMEOUT_NOW, self.id, to, term=self.term))
        else:
            self._dirty.add(to)

    def compact(self, index: int, data: bytes) -> SnapshotMeta | None:
        """The application's state machine snapshot `data` covers entries up to `index`.

        The core forgets its log up to `index` and keeps (meta, data) to send
        to followers that need those entries. The driver then saves it:
        `storage.save_snapshot(meta, data)` with the returned meta. Call only
        between `advance()` and the next `ready()`.

        Args:
            index: the state machine's applied index when `data` was taken
                (at most the applied index the core knows of).
            data: the application's encoding of its state machine.
        Returns:
            The snapshot's position (index and the term of that entry), or
            None when the log is already compacted to `index` or beyond
            (nothing changed; do not save).
        Raises:
            ValueError: `index` is past the applied index.
            RuntimeError: a Ready is outstanding.
        """
        if self._ready_out:
            raise RuntimeError("compact() between advance() and the next ready(), not while a Ready is out")
        if index <= self.log.snapshot_index:
            return None
        if index > self.log.applied:
            raise ValueError(f"cannot compact to {index}: only {self.log.applied} is applied")
        meta = self.snapshot_meta(index)  # (snapshot_index < index <= applied <= last_index)
        self.log.compact(index, meta.term)
        self._snapshot = Snapshot(meta, data)
        log.info("raft.compacted", replica=self.id, term=self.term, index=index, snapshot_term=meta.term,
                 bytes=len(data))
        if self.role == Role.LEADER:
            # Transfers of the older snapshot are of no use now: its next entry is gone too.
            for p, pr in self.progress.items():
                if pr.state == ProgressState.SNAPSHOT:
                    pr.become_probe()
                    self._dirty.add(p)
        return meta

    @property
    def snapshot(self) -> Snapshot | None:
        """The newest snapshot this replica holds (None: none with data)."""
        return self._snapshot

    def step(self, m: Message) -> None:
        """Process one message (from a peer, or a local HUP)."""
        if m.term > self.term and m.type != MT.HUP:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                forced = m.context == TRANSFER_CONTEXT
                in_lease = self.config.check_quorum and self.lead != NONE and self.election_elapsed < self.config.election_tick
                if in_lease and not forced:
                    # We heard from a live leader within the election timeout:
                    # ignore the disruptive candidate without raising our term.
                    return
            if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
                pass  # a pre-vote never changes terms
            else:
                lead = m.src if m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP) else NONE
                self._become_follower(m.term, lead)
        elif 0 < m.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and m.type in (MT.HEARTBEAT, MT.APP, MT.SNAP):
                # Tell a stale leader about the newer term so it steps down
                # (with CheckQuorum/PreVote, its partitioned followers won't).
                self._send(Message(MT.APP_RESP, self.id, m.src, term=self.term))
            elif m.type == MT.PRE_VOTE:
                self._send(Message(MT.PRE_VOTE_RESP, self.id, m.src, term=self.term, reject=True))
            return

        if m.type == MT.HUP:
            self._hup(transfer=False)
        elif m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        else:
            self._step_role(m)

    # ------------------------------------------------------------------
    # Output
    # ------------------------------------------------------------------
    def has_ready(self) -> bool:
        self._flush()
        lg, hs = self.log, self._prev_hard
        return bool(
            self.msgs
            or self._pending_snapshot is not None
            or self.read_states
            or lg.stable < lg.last_index
            or lg.committed > lg.applied
            or self.term != hs.term
            or self.vote != hs.vote
            or lg.committed != hs.commit
            or self.lead != self._prev_soft[0]
            or self.role != self._prev_soft[1]
        )

    def ready(self) -> Ready:
        """Collect the work the driver must do now. See `Ready` for the order."""
        if self._ready_out:
            raise RuntimeError("advance() the previous Ready before asking for another")
        self._flush()
        hs = self._hard_state()
        soft = (self.lead, self.role)
        rd = Ready(
            hard_state=hs if hs != self._prev_hard else None,
            entries=self.log.unstable(),
            messages=self.msgs,
            committed=self.log.next_committed(),
            read_states=self.read_states,
            soft_state=soft if soft != self._prev_soft else None,
            early_send=(self.role == Role.LEADER and self._pending_snapshot is None
                        and (hs.term, hs.vote) == (self._prev_hard.term, self._prev_hard.vote)),
            snapshot=self._pending_snapshot,
        )
        self.msgs = []
        self.read_states = []
        self._prev_soft = soft
        self._ready_out = True
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver finished `rd`: its snapshot and entries are durable and committed applied."""
        if rd.snapshot is not None and rd.snapshot is self._pending_snapshot:
            self._pending_snapshot = None
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role == Role.LEADER and self.progress[self.id].maybe_update(self.log.stable):
                self._maybe_commit()
        if rd.committed:
            self.log.applied_to(rd.committed[-1].index)
        self._ready_out = False

    def status(self) -> dict:
        """A plain snapshot of this replica's Raft state, for operators and tests."""
        return {
            "id": self.id,
            "role": self.role.name.lower(),
            "term": self.term,
            "vote": self.vote,
            "leader": self.lead,
            "commit_index": self.log.committed,
            "applied_index": self.log.applied,
            "last_index": self.log.last_index,
            "snapshot_index": self.log.snapshot_index,
            "voters": self.log.conf.voters,
            "learners": self.log.conf.learners,
            "conf_index": self.log.conf_index,
            "conf_pending": self.log.conf_index > self.log.committed,
            "progress": {p: repr(pr) for p, pr in self.progress.items()} if self.role == Role.LEADER else {},
        }

    # ------------------------------------------------------------------
    # Role transitions
    # ------------------------------------------------------------------
    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
            self._incoming = None  # chunks of an old term's transfer will not be continued
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self.config.election_tick + self.rng.randrange(self.config.election_tick)
        self.votes = {}
        self.lead_transferee = NONE
        self.progress = {}
        self._leaving = {}
        self._reads = []
        self._reads_waiting_commit = []
        self._reads_unsent = False
        self._dirty = set()

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER
        self._step_role = self._step_follower
        self._tick_role = self._tick_election

    def _become_pre_candidate(self) -> None:
        # A pre-candidate keeps its term and vote: it only asks whether it could win.
        self.votes = {}
        self.lead = NONE
        self.role = Role.PRE_CANDIDATE
        self._step_role = self._step_candidate
        self._tick_role = self._tick_election

    def _become_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise AssertionError("a leader cannot become a candidate directly")
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._step_role = self._step_candidate
        self._tick_role = self._tick_election

    def _become_leader(self) -> None:
        if self.role != Role.CANDIDATE:
            raise AssertionError("only a candidate can become leader")
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        self._step_role = self._step_leader
        self._tick_role = self._tick_heartbeat
        nxt = self.log.last_index + 1
        for p in sorted(set(self.log.conf.members) | {self.id}):
            pr = Progress(nxt, self.config.max_inflight_msgs, self.config.max_inflight_bytes)
            if p == self.id:
                pr.match = self.log.stable
                pr.become_replicate()
            pr.recent_active = True
            self.progress[p] = pr
        log.info("raft.became_leader", replica=self.id, term=self.term, index=self.log.last_index)
        # §5.4.2: entries of earlier terms commit only under one of ours. In a
        # log that does not record its configuration yet (a new cluster), the
        # no-op records it, so replicas that join later read it from the log.
        if self.log.conf_recorded:
            self._append([Entry(self.term, nxt, b"")])
        else:
            data = encode_conf_entry(ConfChange(ConfChangeType.BOOTSTRAP, 0), self.log.conf)
            self._append([Entry(self.term, nxt, data, EntryKind.CONF)])

    # ------------------------------------------------------------------
    # Elections
    # ------------------------------------------------------------------
    def _tick_election(self) -> None:
        self.election_elapsed += 1
        # A replica that may not campaign keeps counting: once past the election
        # timeout it no longer counts as hearing a leader, so it answers the
        # candidates that need its vote (a promoted learner that has not seen
        # its promotion yet) instead of ignoring them as in a leader's lease.
        if self.election_elapsed >= self.randomized_timeout and self._promotable():
            self.election_elapsed = 0
            self.step(Message(MT.HUP, self.id, self.id))

    def _promotable(self) -> bool:
        """May this replica campaign? See "Who campaigns" in the module docstring."""
        lg = self.log
        if lg.conf.is_voter(self.id):
            return True
        # Being removed by a change not known to be committed: possibly still needed.
        return lg.conf_index > lg.committed and lg.prev_conf.is_voter(self.id)

    def _hup(self, transfer: bool) -> None:
        if self.role == Role.LEADER:
            return
        if not self._promotable():
            # A learner, a removed replica, or a joining one: never a candidate.
            log.debug("raft.not_campaigning", replica=self.id, term=self.term, index=self.log.last_index,
                      conf_index=self.log.conf_index)
            return
        if self.config.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MT.VOTE, self.term
        if self._poll(self.id, True) == 1:
            # a single-replica cluster wins at once
            if pre:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
            return
        log.info("raft.campaign", replica=self.id, term=term, pre_vote=pre, index=self.log.last_index)
        ctx = TRANSFER_CONTEXT if transfer else b""
        for p in self.log.conf.voters:
            if p != self.id:
                self._send(Message(vote_type, self.id, p, term=term, index=self.log.last_index,
                                   log_term=self.log.last_term, context=ctx))

    def _poll(self, voter: int, granted: bool) -> int:
        """Record a vote; 1 if we won, -1 if we lost, 0 if undecided.

        Only the voters of our configuration count (a learner's answer never does)."""
        conf = self.log.conf
        if not conf.is_voter(voter):
            return 0
        self.votes.setdefault(voter, granted)
        yes = sum(1 for v in self.votes.values() if v)
        no = len(self.votes) - yes
        if yes >= conf.quorum:
            return 1
        if no >= conf.quorum:
            return -1
        return 0

    def _handle_vote_request(self, m: Message) -> None:
        resp = MT.PRE_VOTE_RESP if m.type == MT.PRE_VOTE else MT.VOTE_RESP
        can_vote = (
            self.vote == m.src
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        lg = self.log
        if lg.conf_index <= lg.committed and not lg.conf.is_voter(m.src):
            # Our configuration is committed and the candidate is no voter of it
            # (removed, or a learner whose promotion we have not seen).
            can_vote = False
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # Answer with the candidate's term: a pre-vote grant must not look stale.
            self._send(Message(resp, self.id, m.src, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.src
        else:
            self._send(Message(resp, self.id, m.src, term=self.term, reject=True))

    # ------------------------------------------------------------------
    # Role-specific message handling
    # ------------------------------------------------------------------
    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.APP:
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.src
            self.log.commit_to(m.commit)
            self._send(Message(MT.HEARTBEAT_RESP, self.id, m.src, term=self.term, context=m.context))
        elif t == MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_snapshot(m)
        elif t == MT.TIMEOUT_NOW:
            log.info("raft.timeout_now", replica=self.id, term=self.term, from_=m.src)
            self._hup(transfer=True)
        elif t == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = MT.PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else MT.VOTE_RESP
        if t in (MT.APP, MT.HEARTBEAT, MT.SNAP):
            # someone won this term (m.term == self.term here)
            self._become_follower(m.term, m.src)
            self._step_follower(m)
        elif t == my_resp:
            result = self._poll(m.src, not m.reject)
            if result == 1:
                if self.role == Role.PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self._become_leader()
            elif result == -1:
                self._become_follower(self.term, NONE)

    def _step_leader(self, m: Message) -> None:
        t = m.type
        pr = self.progress.get(m.src)
        if t == MT.READ_INDEX:
            self._leader_read(m.context, m.src)
            return
        if pr is None:
            return
        if t == MT.APP_RESP:
            pr.heard(self._ticks)
            if m.reject:
                hint = m.reject_hint
                if m.log_term > 0:
                    hint, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
                if pr.maybe_decrease(m.index, hint):
                    self._dirty.add(m.src)
                return
            old_paused = pr.is_paused()
            if pr.maybe_update(m.index):
                if pr.state == ProgressState.PROBE or (
                    pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index
                ):
                    # (a follower mid-snapshot that caught up by appends after all
                    # needs the snapshot no more)
                    pr.become_replicate()
                # A new commit index is not broadcast on its own: it rides on
                # the next append or heartbeat (followers need it only to
                # apply; that halves the messages per write under load).
                self._maybe_commit()
                if self.role != Role.LEADER or self.progress.get(m.src) is not pr:
                    return  # the commit removed us (we stepped down) or the sender
                if old_paused or pr.next <= self.log.last_index:
                    self._dirty.add(m.src)
                if m.src == self.lead_transferee and pr.match == self.log.last_index:
                    self._send(Message(MT.TIMEOUT_NOW, self.id, m.src, term=self.term))
        elif t == MT.HEARTBEAT_RESP:
            pr.heard(self._ticks)
            pr.probe_sent = False
            pr.free_first()
            if pr.match < self.log.last_index:
                # An append may have been lost: send one even if it carries no
                # entries; a follower missing the previous entry rejects it and
                # replication backs up from there.
                self._send_append(m.src, send_if_empty=True)
            if m.context:
                self._ack_read(m.context, m.src)
        elif t == MT.SNAP_RESP:
            pr.heard(self._ticks)
            self._handle_snapshot_resp(m, pr)

    # ------------------------------------------------------------------
    # Replication
    # ------------------------------------------------------------------
    def _append(self, entries: list[Entry]) -> None:
        # The leader's own copy counts toward a quorum only once it is durable
        # (see advance()), so its appends may be sent before its own fsync.
        self.log.append(entries)
        self._dirty.update(p for p in self.progress if p != self.id)

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(Message(MT.APP_RESP, self.id, m.src, term=self.term, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(Message(MT.APP_RESP, self.id, m.src, term=self.term, index=last_new))
            return
        hint_index, hint_term = self.log.find_conflict_by_term(min(m.index, self.log.last_index), m.log_term)
        self._send(Message(MT.APP_RESP, self.id, m.src, term=self.term, index=m.index, reject=True,
                           reject_hint=hint_index, log_term=hint_term))

    def _maybe_commit(self) -> bool:
        # Only the voters of the latest configuration count (learners never,
        # nor this leader once it is removing itself).
        conf = self.log.conf
        matches = sorted((self.progress[p].match for p in conf.voters), reverse=True)
        index = matches[conf.quorum - 1]
        # §5.4.2: count replicas only for an entry of our own term.
        if index > self.log.committed and self.log.term(index) == self.term:
            before = self.log.committed
            first_in_term = self.log.term(before) != self.term
            self.log.commit_to(index)
            if first_in_term and self._reads_waiting_commit:
                waiting, self._reads_waiting_commit = self._reads_waiting_commit, []
                for ctx, requester in waiting:
                    self._leader_read(ctx, requester)
            if before < self.log.conf_index <= index:
                self._conf_committed()
            return True
        return False

    def _conf_committed(self) -> None:
        """The latest configuration is committed: step down if it removed us;
        keep replicating to a replica it removed for one more election timeout,
        so that it hears of the commit and learns it was removed."""
        conf = self.log.conf
        for p in self.progress:
            if p != self.id and p not in conf.members and p not in self._leaving:
                self._leaving[p] = self._ticks + self.config.election_tick
        if not conf.is_voter(self.id):
            self._broadcast_heartbeat(b"")  # the new configuration's voters learn it is committed
            best = max(conf.voters, key=lambda p: (self.progress[p].match, -p))
            if self.progress[best].match == self.log.last_index:
                self._send(Message(MT.TIMEOUT_NOW, self.id, best, term=self.term))
            log.info("raft.removed_leader_steps_down", replica=self.id, term=self.term, index=self.log.conf_index,
                     handoff=best if self.progress[best].match == self.log.last_index else NONE)
            self._become_follower(self.term, NONE)

    def _send_append(self, to: int, send_if_empty: bool) -> bool:
        pr = self.progress[to]
        if pr.is_paused():
            return False
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None:
            # The entries this follower needs were compacted away.
            return self._start_snapshot(to)
        entries = self.log.slice(pr.next, self.log.last_index + 1, self.config.max_msg_bytes) if pr.next <= self.log.last_index else []
        if not entries and not send_if_empty:
            return False
        self._send(Message(MT.APP, self.id, to, term=self.term, index=prev, log_term=prev_term,
                           entries=tuple(entries), commit=self.log.committed))
        if entries:
            pr.sent(entries[-1].index, sum(len(e.data) + 24 for e in entries))
        elif pr.state == ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _send_all(self, to: int) -> None:
        pr = self.progress[to]
        if pr.state == ProgressState.SNAPSHOT:
            self._send_snapshot(to)
            return
        # A probe goes out even when empty (it finds where the logs agree); a
        # replicating follower gets only entries: commit rides on heartbeats.
        sent = self._send_append(to, send_if_empty=pr.state == ProgressState.PROBE)
        while sent and pr.state == ProgressState.REPLICATE and pr.next <= self.log.last_index:
            sent = self._send_append(to, send_if_empty=False)

    def _flush(self) -> None:
        """Turn coalesced work into messages: one append per dirty follower, one read round."""
        if self.role != Role.LEADER:
            return
        if self._dirty:
            dirty, self._dirty = self._dirty, set()
            for p in sorted(dirty):
                if p in self.progress:
                    self._send_all(p)
        if self._reads_unsent and self._reads:
            self._reads_unsent = False
            self._broadcast_heartbeat(self._reads[-1].context)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_tick:
            self.election_elapsed = 0
            if self.config.check_quorum:
                conf = self.log.conf
                active = sum(1 for p in conf.voters if p == self.id or self.progress[p].recent_active)
                for p, pr in self.progress.items():
                    if p != self.id:
                        pr.recent_active = False
                if active < conf.quorum:
                    log.warning("raft.lost_quorum", replica=self.id, term=self.term, active=active)
                    self._become_follower(self.term, NONE)
                    return
            if self.lead_transferee != NONE:
                log.info("raft.transfer_abandoned", replica=self.id, term=self.term, to=self.lead_transferee)
                self.lead_transferee = NONE
        for p, pr in self.progress.items():
            tr = pr.snapshot
            if tr is not None and tr.tick(self._retry_ticks):
                log.info("raft.snapshot_resend", replica=self.id, term=self.term, peer=p, index=tr.meta.index,
                         chunk=tr.acked)
                self._send_snapshot(p)
        if self.heartbeat_elapsed >= self.config.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat(self._reads[-1].context if self._reads else b"")
        if self._leaving:
            for p in [p for p, until in self._leaving.items() if until <= self._ticks]:
                del self._leaving[p], self.progress[p]
                self._dirty.discard(p)

    def _broadcast_heartbeat(self, context: bytes) -> None:
        for p, pr in self.progress.items():
            if p != self.id:
                commit = min(pr.match, self.log.committed)
                self._send(Message(MT.HEARTBEAT, self.id, p, term=self.term, commit=commit, context=context))

    # ------------------------------------------------------------------
    # InstallSnapshot
    # ------------------------------------------------------------------
    def _start_snapshot(self, to: int) -> bool:
        """Leader: `to` needs entries we compacted; start sending our snapshot."""
        pr = self.progress[to]
        snap = self._snapshot
        if snap is None:
            # Compaction was recorded without the snapshot's data: nothing to send.
            pr.become_snapshot(None, 0)
            log.warning("raft.snapshot_unavailable", replica=self.id, term=self.term, peer=to,
                        index=self.log.snapshot_index)
            return False
        chunks = max(1, -(-len(snap.data) // self.config.snapshot_chunk_bytes))
        pr.become_snapshot(snap.meta, chunks)
        log.info("raft.snapshot_send", replica=self.id, term=self.term, peer=to, index=snap.meta.index,
                 snapshot_term=snap.meta.term, bytes=len(snap.data), chunks=chunks)
        self._send_snapshot(to)
        return True

    def _send_snapshot(self, to: int) -> None:
        """Leader: send the chunks the window allows."""
        tr = self.progress[to].snapshot
        snap = self._snapshot
        if tr is None or snap is None or snap.meta != tr.meta:
            return
        size, window = self.config.snapshot_chunk_bytes, self.config.max_inflight_snapshot_chunks
        meta, data = snap.meta, snap.data
        while tr.can_send(window):
            k = tr.next
            lo = k * size
            self._send(Message(MT.SNAP, self.id, to, term=self.term, index=meta.index, log_term=meta.term,
                               snap_offset=lo, snap_chunk=data[lo : lo + size],
                               snap_done=k == tr.chunks - 1, snap_conf=meta.conf))
            tr.next = k + 1

    def _handle_snapshot_resp(self, m: Message, pr: Progress) -> None:
        if m.snap_done:
            # The follower's log now matches ours up to m.index.
            pr.maybe_update(m.index)
            if pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index:
                log.info("raft.snapshot_delivered", replica=self.id, term=self.term, peer=m.src, index=m.index)
                pr.become_probe()
                self._dirty.add(m.src)
            return
        tr = pr.snapshot
        if tr is None or (m.index, m.log_term) != (tr.meta.index, tr.meta.term):
            return  # about a transfer we abandoned
        tr.ack(-(-m.snap_offset // self.config.snapshot_chunk_bytes), rewind=m.reject)
        self._send_snapshot(m.src)

    def _handle_snapshot(self, m: Message) -> None:
        """Follower: one chunk of an InstallSnapshot from the leader of our term."""
        if m.index <= self.log.committed:
            # We hold everything this snapshot covers, committed: installing it
            # would roll the state machine back. Just say so.
            self._incoming = None
            self._send_snap_resp(m, 0, done=True)
            return
        key = (m.term, m.index, m.log_term)
        inc = self._incoming
        if inc is None or inc.key != key:
            if inc is not None and inc.key[0] == m.term and m.index < inc.key[1]:
                return  # a late chunk of a snapshot this leader has since replaced
            inc = self._incoming = _IncomingSnapshot(key, bytearray())
        have = len(inc.buf)
        if m.snap_offset > have:
            # A chunk is missing (lost, reordered, or we restarted): ask once per gap.
            if inc.nacked != have:
                inc.nacked = have
                self._send_snap_resp(m, have, reject=True)
            return
        if m.snap_offset < have:
            self._send_snap_resp(m, have)  # a duplicate: repeat where we are
            return
        inc.buf += m.snap_chunk
        if not m.snap_done:
            self._send_snap_resp(m, len(inc.buf))
            return
        self._incoming = None
        kept = self.log.restore(m.index, m.log_term, m.snap_conf)
        snap = Snapshot(SnapshotMeta(m.index, m.log_term, self.log.conf_at(m.index)), bytes(inc.buf))
        self._snapshot = self._pending_snapshot = snap
        log.info("raft.snapshot_installed", replica=self.id, term=self.term, index=m.index,
                 snapshot_term=m.log_term, bytes=len(snap.data), kept_tail=kept, last_index=self.log.last_index,
                 voters=self.log.conf.voters, learners=self.log.conf.learners)
        self._send_snap_resp(m, len(snap.data), done=True)

    def _send_snap_resp(self, m: Message, held: int, reject: bool = False, done: bool = False) -> None:
        self._send(Message(MT.SNAP_RESP, self.id, m.src, term=self.term, index=m.index, log_term=m.log_term,
                           snap_offset=held, reject=reject, snap_done=done))

    # ------------------------------------------------------------------
    # ReadIndex
    # ------------------------------------------------------------------
    def _leader_read(self, context: bytes, requester: int) -> None:
        if self.log.term(self.log.committed) != self.term:
            # Our commit index may lag the previous leader's until our no-op commits.
            self._reads_waiting_commit.append((context, requester))
            return
        if self.log.conf.voters == (self.id,):
            self._release_read(context, self.log.committed, requester)
            return
        self._reads.append(_PendingRead(context, self.log.committed, requester, {self.id}))
        self._reads_unsent = True

    def _ack_read(self, context: bytes, voter: int) -> None:
        for pos, rd in enumerate(self._reads):
            if rd.context == context:
                conf = self.log.conf
                if not conf.is_voter(voter):
                    return  # a learner's answer confirms nothing
                rd.acks.add(voter)
                if sum(1 for a in rd.acks if conf.is_voter(a)) >= conf.quorum:
                    # A quorum confirmed our leadership after every earlier request too.
                    done, self._reads = self._reads[: pos + 1], self._reads[pos + 1 :]
                    for r in done:
                        self._release_read(r.context, r.index, r.requester)
                return

    def _release_read(self, context: bytes, index: int, requester: int) -> None:
        if requester == self.id:
            self.read_states.append(ReadState(index, context))
        else:
            self._send(Message(MT.READ_INDEX_RESP, self.id, requester, term=self.term, index=index, context=context))

    # ------------------------------------------------------------------
    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)
