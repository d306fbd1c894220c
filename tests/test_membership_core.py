"""Membership changes in the sans-IO core, driven by hand: the API and its
refusals, learners (no vote, no commit, no ReadIndex, no CheckQuorum), the
latest configuration in the log (truncation reverts it), removals (of a
follower, of the leader), snapshots and restarts carrying the configuration.

Sentences of the Raft dissertation (§4.1-4.3) and of etcd's learner design
are quoted where a test pins one down.
"""

from __future__ import annotations

import pytest

from kv.errors import NotLeader
from raft_actors.core import Config, RaftCore, Role
from raft_actors.membership import (
    ConfChange,
    ConfChangeNotLeader,
    ConfChangeRefused,
    ConfChangeType,
    Membership,
    Refusal,
    decode_conf_entry,
    encode_conf_entry,
)
from raft_actors.types import (
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType as MT,
    PersistedState,
    Ready,
    SnapshotMeta,
)
from tests.helpers import drain, sent


def committed(readies: list[Ready]) -> list[Entry]:
    return [e for rd in readies for e in rd.committed]


def ack(core: RaftCore, *frm: int, index: int | None = None) -> list[Ready]:
    """Followers `frm` acknowledge the leader's log up to `index` (default: all of it)."""
    for f in frm:
        core.step(Message(MT.APP_RESP, f, core.id, term=core.term, index=core.log.last_index if index is None else index))
    return drain(core)


def heartbeat_acks(core: RaftCore, *frm: int, context: bytes = b"") -> list[Ready]:
    for f in frm:
        core.step(Message(MT.HEARTBEAT_RESP, f, core.id, term=core.term, context=context))
    return drain(core)


def conf_entry(term: int, index: int, change: ConfChange, membership: Membership) -> Entry:
    return Entry(term, index, encode_conf_entry(change, membership), EntryKind.CONF)


def make_leader(peers: tuple[int, ...] = (1, 2, 3), learners: tuple[int, ...] = (), **cfg) -> RaftCore:
    """Replica 1 leads term 1 with its first entry committed by everybody, who answered recently."""
    core = RaftCore(Config(id=1, peers=peers, learners=learners, **cfg))
    core.campaign()
    for p in peers[1:]:
        core.step(Message(MT.PRE_VOTE_RESP, p, 1, term=1))
    for p in peers[1:]:
        core.step(Message(MT.VOTE_RESP, p, 1, term=1))
    assert core.role == Role.LEADER
    drain(core)
    ack(core, *[p for p in peers + learners if p != 1])
    assert core.log.committed == core.log.last_index
    return core


def follower(entries: list[Entry], commit: int, peers: tuple[int, ...] = (1, 2, 3), id: int = 2,
             snapshot: SnapshotMeta = SnapshotMeta(), term: int = 1, **cfg) -> RaftCore:
    return RaftCore(Config(id=id, peers=peers, **cfg),
                    PersistedState(HardState(term, 0, commit), snapshot, tuple(entries)))


BOOT = ConfChange(ConfChangeType.BOOTSTRAP, 0)


# -- configuration, status, joining ----------------------------------------------------
def test_initial_configuration_is_config_peers_and_status_shows_it() -> None:
    core = RaftCore(Config(id=2, peers=(3, 1, 2), learners=(7,)))
    assert core.membership == Membership((1, 2, 3), (7,))
    st = core.status()
    assert (st["voters"], st["learners"], st["conf_index"], st["conf_pending"]) == ((1, 2, 3), (7,), 0, False)


def test_a_joining_replica_knows_no_voters_and_never_campaigns() -> None:
    core = RaftCore(Config(id=9, peers=()))
    assert core.membership == Membership()
    for _ in range(100):
        core.tick()
    core.campaign()
    core.step(Message(MT.TIMEOUT_NOW, 1, 9, term=0))
    assert core.role == Role.FOLLOWER and core.term == 0 and sent(drain(core)) == []


def test_config_validation() -> None:
    Config(id=4, peers=())  # joining
    Config(id=4, peers=(1, 2, 3), learners=(4,))
    with pytest.raises(ValueError, match="joining"):
        Config(id=4, peers=(1, 2, 3))
    with pytest.raises(ValueError):
        Config(id=1, peers=(1, 2), learners=(2,))  # a voter and a learner at once
    with pytest.raises(ValueError):
        Config(id=1, peers=(1,), promote_max_lag=-1)


def test_the_first_leader_writes_the_configuration_down_as_its_noop() -> None:
    core = make_leader(learners=(5,))
    first = core.log.entries[0]
    assert (first.index, first.kind) == (1, EntryKind.CONF)
    entry = decode_conf_entry(first.data)
    assert entry.change == BOOT and entry.membership == Membership((1, 2, 3), (5,))
    assert core.log.conf_recorded
    # A later leader, whose log records the configuration, appends an empty no-op.
    again = RaftCore(Config(id=2, peers=(1, 2, 3)), PersistedState(HardState(1, 0, 1), SnapshotMeta(), (first,)))
    again.campaign()
    again.step(Message(MT.PRE_VOTE_RESP, 3, 2, term=2))
    again.step(Message(MT.VOTE_RESP, 3, 2, term=2))
    assert again.role == Role.LEADER and again.log.entries[-1] == Entry(2, 2, b"")


def test_committed_conf_entries_reach_the_application_and_decode() -> None:
    core = make_leader()
    index = core.propose_conf_change(ConfChange.add_learner(4))
    assert core.status()["conf_pending"] and core.status()["learners"] == (4,)
    out = ack(core, 2)
    [e] = [e for e in committed(out) if e.index == index]
    assert e.kind == EntryKind.CONF
    entry = decode_conf_entry(e.data)
    assert entry.change == ConfChange(ConfChangeType.ADD_LEARNER, 4)
    assert entry.membership == Membership((1, 2, 3), (4,)) == core.membership
    assert not core.status()["conf_pending"]


# -- refusals ---------------------------------------------------------------------------
def refused(core: RaftCore, change: ConfChange, reason: Refusal) -> ConfChangeRefused:
    last = core.log.last_index
    with pytest.raises(ConfChangeRefused) as info:
        core.propose_conf_change(change)
    assert info.value.reason == reason, info.value
    assert core.log.last_index == last  # nothing appended
    return info.value


def test_only_the_leader_changes_membership() -> None:
    core = follower([], 0)
    core.step(Message(MT.HEARTBEAT, 3, 2, term=1))
    err = refused(core, ConfChange.add_learner(4), Refusal.NOT_LEADER)
    assert isinstance(err, ConfChangeNotLeader) and isinstance(err, NotLeader) and err.leader_hint == 3
    assert "not the leader" in str(err)


def test_a_new_leader_first_commits_an_entry_of_its_term() -> None:
    # Dissertation §4.1 (the bug fix): no change before the leader has committed in its term.
    core = RaftCore(Config(id=1, peers=(1, 2, 3)))
    core.campaign()
    core.step(Message(MT.PRE_VOTE_RESP, 2, 1, term=1))
    core.step(Message(MT.VOTE_RESP, 2, 1, term=1))
    drain(core)
    err = refused(core, ConfChange.add_learner(4), Refusal.TERM_NOT_COMMITTED)
    assert "retry" in str(err)
    ack(core, 2, 3)
    core.propose_conf_change(ConfChange.add_learner(4))


def test_one_change_at_a_time() -> None:
    core = make_leader()
    core.propose_conf_change(ConfChange.add_learner(4))
    err = refused(core, ConfChange.add_learner(5), Refusal.PENDING)
    assert "not committed" in str(err)
    ack(core, 2)
    core.propose_conf_change(ConfChange.add_learner(5))


def test_changes_that_do_not_fit_the_configuration_are_refused() -> None:
    core = make_leader(learners=(4,))
    refused(core, ConfChange.promote(2), Refusal.NOT_LEARNER)  # already a voter
    refused(core, ConfChange.promote(9), Refusal.NOT_LEARNER)  # unknown
    refused(core, ConfChange.add_learner(3), Refusal.ALREADY_MEMBER)
    refused(core, ConfChange.add_learner(4), Refusal.ALREADY_MEMBER)
    refused(core, ConfChange.remove(9), Refusal.NOT_MEMBER)
    refused(core, ConfChange.add_learner(0), Refusal.INVALID)
    refused(core, BOOT, Refusal.INVALID)
    with pytest.raises(ValueError, match="propose_conf_change"):
        core.propose([b"x"], kind=EntryKind.CONF)
    solo = make_leader(peers=(1,))
    err = refused(solo, ConfChange.remove(1), Refusal.LAST_VOTER)
    assert "last voter" in str(err)


def test_a_removal_that_would_lose_quorum_is_refused() -> None:
    core = make_leader(peers=(1, 2, 3, 4, 5), election_tick=10)
    for _ in range(11):
        core.tick()  # nobody answered for a whole election timeout ...
    drain(core)
    heartbeat_acks(core, 2)  # ... except 2
    # {1, 2, 3, 4} needs 3 and only 1 and 2 answered: removing 5 would lose quorum.
    err = refused(core, ConfChange.remove(5), Refusal.WOULD_LOSE_QUORUM)
    assert "answered" in str(err) and "[1, 2]" in str(err)
    heartbeat_acks(core, 3)
    core.propose_conf_change(ConfChange.remove(5))  # 1, 2, 3 of {1, 2, 3, 4}


def test_removing_the_leader_needs_a_responsive_quorum_without_it() -> None:
    core = make_leader(peers=(1, 2, 3), election_tick=10)
    for _ in range(11):
        core.tick()
    drain(core)
    heartbeat_acks(core, 2)
    refused(core, ConfChange.remove(1), Refusal.WOULD_LOSE_QUORUM)  # {2, 3} needs both
    heartbeat_acks(core, 3)
    core.propose_conf_change(ConfChange.remove(1))


def test_promoting_a_learner_that_lags_is_refused_until_it_catches_up() -> None:
    core = make_leader(learners=(4,), promote_max_lag=2)
    core.propose([b"a", b"b", b"c", b"d"])
    ack(core, 2, 3)
    ack(core, 4, index=core.log.last_index - 3)
    err = refused(core, ConfChange.promote(4), Refusal.LEARNER_BEHIND)
    assert "3 entries behind" in str(err)
    ack(core, 4, index=core.log.last_index - 2)
    index = core.propose_conf_change(ConfChange.promote(4))
    assert core.membership == Membership((1, 2, 3, 4))
    ack(core, 2, 3, 4)
    assert core.log.committed == index


def test_a_learner_that_stopped_answering_is_not_promoted() -> None:
    core = make_leader(learners=(4,), election_tick=10)
    for _ in range(11):
        core.tick()
    drain(core)
    heartbeat_acks(core, 2, 3)
    err = refused(core, ConfChange.promote(4), Refusal.LEARNER_BEHIND)
    assert "answered recently: False" in str(err)


def test_no_change_while_leadership_is_transferred() -> None:
    core = make_leader()
    core.propose([b"x"])
    drain(core)
    core.transfer_leadership(2)
    err = refused(core, ConfChange.add_learner(4), Refusal.TRANSFERRING)
    assert isinstance(err, NotLeader) and err.leader_hint == 2


def test_leadership_goes_only_to_voters() -> None:
    core = make_leader(learners=(4,))
    with pytest.raises(ValueError, match="voter"):
        core.transfer_leadership(4)


# -- learners count for nothing --------------------------------------------------------
def test_learners_get_appends_but_never_count_toward_commit() -> None:
    core = make_leader(learners=(4, 5))
    index = core.propose([b"x"])
    out = drain(core)
    assert {m.dst for m in sent(out, MT.APP)} == {2, 3, 4, 5}
    ack(core, 4, 5)
    assert core.log.committed < index  # leader + two learners: no quorum of {1, 2, 3}
    ack(core, 3)
    assert core.log.committed == index


def test_learners_never_confirm_a_read() -> None:
    core = make_leader(learners=(4, 5))
    assert core.read_index(b"r1")
    out = drain(core)
    assert {m.dst for m in sent(out, MT.HEARTBEAT)} == {2, 3, 4, 5}
    heartbeat_acks(core, 4, 5, context=b"r1")
    assert not core.read_states
    out = heartbeat_acks(core, 2, context=b"r1")
    assert [rs.context for rd in out for rs in rd.read_states] == [b"r1"]


def test_learners_never_keep_a_leader_in_power() -> None:
    # CheckQuorum counts voters only: a leader that hears only learners steps down.
    core = make_leader(learners=(4, 5), election_tick=10)
    for _ in range(25):
        core.tick()
        heartbeat_acks(core, 4, 5)
    assert core.role == Role.FOLLOWER


def test_a_learner_never_campaigns() -> None:
    boot = conf_entry(1, 1, BOOT, Membership((1, 2), (3,)))
    core = follower([boot], 1, peers=(), id=3)
    assert core.membership.learners == (3,)
    for _ in range(100):
        core.tick()
    core.step(Message(MT.TIMEOUT_NOW, 1, 3, term=1))
    assert core.role == Role.FOLLOWER and sent(drain(core)) == []


def test_a_candidate_asks_and_counts_only_its_voters() -> None:
    boot = conf_entry(1, 1, BOOT, Membership((1, 2, 3), (4,)))
    core = follower([boot], 1, id=1)
    core.campaign()
    assert {m.dst for m in sent(drain(core), MT.PRE_VOTE)} == {2, 3}
    core.step(Message(MT.PRE_VOTE_RESP, 4, 1, term=2))  # an answer from a learner: ignored
    assert core.role == Role.PRE_CANDIDATE
    core.step(Message(MT.PRE_VOTE_RESP, 2, 1, term=2))
    core.step(Message(MT.VOTE_RESP, 4, 1, term=2))
    assert core.role == Role.CANDIDATE
    core.step(Message(MT.VOTE_RESP, 3, 1, term=2))
    assert core.role == Role.LEADER


def test_a_replica_whose_log_still_says_learner_votes_for_a_candidate_that_promoted_it() -> None:
    # etcd's case: the promotion of 4 committed on {1, 2, 3} without reaching 4,
    # then the leader died: 2 needs 4's vote to win the election of {1, 2, 3, 4}.
    conf = Membership((1, 2, 3), (4,))
    boot = conf_entry(1, 1, BOOT, conf)
    core = follower([boot], 1, id=4, peers=())
    assert core.membership.learners == (4,)
    core.step(Message(MT.VOTE, 2, 4, term=2, index=2, log_term=1))
    [resp] = sent(drain(core), MT.VOTE_RESP)
    assert not resp.reject and core.vote == 2


def test_a_replica_refuses_a_candidate_its_committed_configuration_removed() -> None:
    removal = conf_entry(1, 2, ConfChange.remove(3), Membership((1, 2)))
    core = follower([conf_entry(1, 1, BOOT, Membership((1, 2, 3))), removal], 2, id=2)
    core.step(Message(MT.PRE_VOTE, 3, 2, term=2, index=5, log_term=1))
    core.step(Message(MT.VOTE, 3, 2, term=2, index=5, log_term=1))
    assert all(m.reject for m in sent(drain(core)))
    assert core.vote == 0


# -- the latest configuration in the log ----------------------------------------------
def test_a_follower_uses_a_conf_entry_at_once_and_reverts_when_it_is_truncated() -> None:
    # Dissertation §4.1: a server uses the latest configuration in its log, committed or not.
    boot = conf_entry(1, 1, BOOT, Membership((1, 2, 3)))
    core = follower([boot], 1)
    add = conf_entry(1, 2, ConfChange.add_learner(4), Membership((1, 2, 3), (4,)))
    core.step(Message(MT.APP, 1, 2, term=1, index=1, log_term=1, entries=(add,), commit=1))
    assert core.membership == Membership((1, 2, 3), (4,)) and core.status()["conf_pending"]
    # A leader of term 2 that never had it overwrites index 2.
    core.step(Message(MT.APP, 3, 2, term=2, index=1, log_term=1, entries=(Entry(2, 2, b""),), commit=1))
    assert core.membership == Membership((1, 2, 3)) and core.log.conf_index == 1


def test_removing_a_follower() -> None:
    core = make_leader()
    index = core.propose_conf_change(ConfChange.remove(3))
    out = drain(core)
    assert core.membership == Membership((1, 2))
    assert 3 in {m.dst for m in sent(out, MT.APP)}  # it still gets the entry, to learn of its removal
    ack(core, 3)
    assert core.log.committed < index  # its acknowledgement counts for nothing
    ack(core, 2)
    assert core.log.committed == index
    # For one more election timeout it is told the commit index, so it learns of its removal ...
    core.tick()
    assert [m.commit for m in sent(drain(core), MT.HEARTBEAT, 3)] == [index]
    for _ in range(core.config.election_tick):
        core.tick()
    drain(core)
    assert 3 not in core.progress  # ... then forgotten
    core.propose([b"after"])
    core.tick()
    assert 3 not in {m.dst for m in sent(drain(core))}


def test_a_leader_removing_itself_leads_until_the_change_commits_then_hands_off() -> None:
    # Dissertation §4.2.2: the leader manages a configuration that excludes it, not
    # counting itself, and steps down once the new configuration is committed.
    core = make_leader()
    index = core.propose_conf_change(ConfChange.remove(1))
    drain(core)
    assert core.role == Role.LEADER and core.membership == Membership((2, 3))
    more = core.propose([b"still leading"])
    drain(core)
    ack(core, 2)
    assert core.log.committed < index  # its own copy does not count toward {2, 3}
    out = ack(core, 3, index=index)
    assert core.log.committed == index
    assert core.role == Role.FOLLOWER and core.lead == 0
    hb = {m.dst: m.commit for m in sent(out, MT.HEARTBEAT)}
    assert hb == {2: index, 3: index}
    [handoff] = sent(out, MT.TIMEOUT_NOW)
    assert handoff.dst == 2  # caught up to the end of the log (3 was not yet: `more`)
    assert more > index
    for _ in range(100):
        core.tick()
    assert core.role == Role.FOLLOWER and not sent(drain(core), MT.PRE_VOTE)


def test_a_replica_being_removed_campaigns_until_its_removal_is_committed() -> None:
    # Dissertation §4.2.2: "a server that is not part of its own latest configuration
    # should still start new elections, as it might still be needed until the Cnew
    # entry is committed. It does not count its own vote."
    boot = conf_entry(1, 1, BOOT, Membership((1, 3)))
    removal = conf_entry(1, 2, ConfChange.remove(1), Membership((3,)))
    core = follower([boot, removal], 1, id=1, peers=(1, 3))
    core.campaign()
    assert {m.dst for m in sent(drain(core), MT.PRE_VOTE)} == {3}
    assert core.role == Role.PRE_CANDIDATE  # its own vote is not enough: it counts for nothing
    core.step(Message(MT.PRE_VOTE_RESP, 3, 1, term=2))
    core.step(Message(MT.VOTE_RESP, 3, 1, term=2))
    assert core.role == Role.LEADER
    drain(core)
    out = ack(core, 3)  # commits the removal (and the no-op): it steps down
    assert core.log.committed == 3 and core.role == Role.FOLLOWER
    assert any(m.type == MT.TIMEOUT_NOW and m.dst == 3 for m in sent(out))
    core.campaign()
    assert core.role == Role.FOLLOWER


# -- snapshots and restarts ------------------------------------------------------------
def test_compaction_records_the_configuration_at_the_snapshot_index() -> None:
    core = make_leader(learners=(4,))
    first_change = core.propose_conf_change(ConfChange.promote(4))
    ack(core, 2, 3, 4)
    core.propose([b"x"])
    ack(core, 2, 3, 4)
    second = core.propose_conf_change(ConfChange.remove(3))
    drain(core)
    assert core.snapshot_meta(first_change).conf == Membership((1, 2, 3, 4))
    assert core.snapshot_meta(first_change - 1).conf == Membership((1, 2, 3), (4,))
    meta = core.compact(first_change + 1, b"state")
    assert meta == SnapshotMeta(first_change + 1, 1, Membership((1, 2, 3, 4)))
    assert core.membership == Membership((1, 2, 4)) and core.log.conf_index == second


def test_a_restart_rebuilds_the_configuration_from_the_snapshot_and_the_log_tail() -> None:
    snap = SnapshotMeta(10, 1, Membership((1, 2, 3), (4,)))
    tail = (Entry(1, 11, b"x"), conf_entry(1, 12, ConfChange.promote(4), Membership((1, 2, 3, 4))), Entry(1, 13, b"y"))
    persisted = PersistedState(HardState(1, 0, 13), snap, tail, b"state@10")
    core = RaftCore(Config(id=2, peers=(1, 2)), persisted)  # Config.peers: only for a new, empty log
    assert core.membership == Membership((1, 2, 3, 4)) and core.log.conf_index == 12
    assert core.log.conf_at(11) == Membership((1, 2, 3), (4,))
    assert core.snapshot.meta == snap
    rd = core.ready()
    assert [e.kind for e in rd.committed] == [EntryKind.NORMAL, EntryKind.CONF, EntryKind.NORMAL]
    # Without CONF entries in the tail, the snapshot's configuration is in force.
    core = RaftCore(Config(id=2, peers=(1, 2)), PersistedState(HardState(1, 0, 10), snap, (), b"s"))
    assert core.membership == snap.conf and core.log.conf_recorded


def test_a_joining_learner_installs_a_snapshot_and_learns_the_configuration_from_it() -> None:
    core = make_leader(snapshot_chunk_bytes=4)
    core.propose([b"a", b"b"])
    ack(core, 2, 3)
    core.compact(core.log.applied, b"0123456789")
    core.propose_conf_change(ConfChange.add_learner(4))
    out = drain(core)
    joiner = RaftCore(Config(id=4, peers=(), snapshot_chunk_bytes=4))
    for _ in range(10):  # probe, rejection, snapshot chunks, ... until it caught up
        msgs = [m for m in sent(out) if m.dst == 4]
        if not msgs:
            break
        for m in msgs:
            joiner.step(m)
        answers = drain(joiner)
        if any(rd.snapshot for rd in answers):
            installed = next(rd.snapshot for rd in answers if rd.snapshot)
        for m in sent(answers):
            core.step(m)
        out = drain(core)
    assert installed.meta.conf == Membership((1, 2, 3)) and installed.data == b"0123456789"
    # the snapshot predates the change that added it; the append after it brings that
    assert joiner.membership == Membership((1, 2, 3), (4,)) == core.membership
    assert core.progress[4].match == core.log.last_index
    for _ in range(100):
        joiner.tick()
    assert joiner.role == Role.FOLLOWER and not sent(drain(joiner), MT.PRE_VOTE)
