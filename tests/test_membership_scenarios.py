"""Named membership scenarios on the deterministic simulator (Raft dissertation
§4.1-4.3, etcd's learners). The simulator checks the Raft invariants after
every delivery, with quorums per configuration, plus the membership ones (one
uncommitted change per leader, learners never vote or count)."""

from __future__ import annotations

import pytest

from raft_actors.core import Role
from raft_actors.membership import Membership, Refusal
from raft_actors.types import MessageType as MT
from tests.simulator import UNITS_PER_TICK, Simulator

pytestmark = pytest.mark.sim


def settled(n: int = 3, seed: int = 1, **kw) -> Simulator:
    sim = Simulator(n, seed, crash_unsynced=0.0, **kw)
    assert sim.run_until(sim.agreed_leader, 100), "no initial leader"
    assert applied_everywhere(sim, sim.core(sim.leader()).log.last_index)
    return sim


def applied_everywhere(sim: Simulator, index: int, ticks: int = 60) -> bool:
    return sim.run_until(lambda: all(sim.nodes[i].core is not None and sim.nodes[i].core.log.applied >= index
                                     for i in sim.members()), ticks)


def committed_by_all(sim: Simulator, index: int, ticks: int = 60) -> bool:
    """`index` is committed and applied by every member of the committed configuration."""
    return sim.run_until(lambda: index in sim.committed and all(
        sim.nodes[i].core is not None and sim.nodes[i].core.log.applied >= index for i in sim.members()), ticks)


def others(sim: Simulator, *but: int) -> list[int]:
    return [i for i in sim.peers if i not in but]


def test_a_learner_catches_up_by_snapshot_then_is_promoted() -> None:
    sim = settled(3, snapshot_chunk_bytes=64, promote_max_lag=4)
    ldr = sim.leader()
    for k in range(40):
        last = sim.propose(b"before-%d" % k)
    assert applied_everywhere(sim, last)
    for i in sim.peers:
        sim.compact_now(i)
    sim.record = True
    new = sim.add_learner()
    assert new == 4 and sim.core(ldr).membership == Membership((1, 2, 3), (4,))
    assert sim.promote(new) is None and sim.last_refusal.reason == Refusal.PENDING
    added = sim.core(ldr).log.conf_index
    assert sim.run_until(lambda: sim.core(new).log.applied >= added, 60)
    snaps = [m for m in sim.sent if m.type == MT.SNAP and m.dst == new]
    assert len({m.snap_offset for m in snaps}) > 3 and sim.stats["learner_snap_installs"] >= 1
    assert sim.core(new).log.snapshot_index >= last and sim.core(new).membership.learners == (new,)
    assert not any(m.type in (MT.PRE_VOTE, MT.VOTE) and m.src == new for m in sim.sent)  # learners never campaign
    assert sim.run_until(lambda: sim.promote(new) is not None, 30)
    assert committed_by_all(sim, sim.core(ldr).log.conf_index)
    assert sim.committed_conf() == Membership((1, 2, 3, 4))
    # It counts now: with two of four voters down, nothing commits; with one, it does.
    a, b = others(sim, ldr, new)
    sim.crash(a)
    sim.crash(b)
    stuck = sim.propose(b"needs three of four")
    sim.run(10)
    assert stuck not in sim.committed
    sim.restart(a)
    assert committed_by_all(sim, stuck, 60) or sim.run_until(lambda: stuck in sim.committed, 60)
    sim.stabilize()


def test_removing_a_follower() -> None:
    sim = settled(3)
    ldr = sim.leader()
    f = others(sim, ldr)[0]
    index = sim.remove(f)
    assert index is not None and sim.core(ldr).membership == Membership(tuple(others(sim, f)))
    assert sim.run_until(lambda: sim.nodes[f].retired, 30), "the removed replica applied its removal and stopped"
    assert sim.committed_conf().voters == tuple(sorted(others(sim, f)))
    last = sim.propose(b"two voters now")
    assert committed_by_all(sim, last)
    sim.stabilize()


def test_removing_the_leader() -> None:
    sim = settled(3)
    ldr = sim.leader()
    term = sim.core(ldr).term
    sim.record = True
    index = sim.remove(ldr)
    assert index is not None
    assert sim.core(ldr).role == Role.LEADER  # it leads the new configuration until the change commits
    assert sim.run_until(lambda: sim.nodes[ldr].retired, 30)
    assert any(m.type == MT.TIMEOUT_NOW and m.src == ldr for m in sim.sent)  # it handed leadership over
    assert sim.run_until(lambda: sim.agreed_leader() not in (0, ldr), 30)
    new = sim.leader()
    assert sim.core(new).term > term and sim.core(new).membership == Membership(tuple(others(sim, ldr)))
    assert sim.stats["leader_removals"] == 1
    last = sim.propose(b"under the new leader")
    assert committed_by_all(sim, last)
    sim.stabilize()


def test_a_change_that_would_lose_quorum_is_refused() -> None:
    sim = settled(3)
    ldr = sim.leader()
    down, up = others(sim, ldr)
    sim.crash(down)
    sim.run(12)  # more than an election timeout: the leader knows `down` is gone
    assert sim.remove(up) is None
    err = sim.last_refusal
    assert err.reason == Refusal.WOULD_LOSE_QUORUM and "answered" in str(err)
    assert sim.core(ldr).membership == Membership((1, 2, 3))
    # Removing the replica that is down keeps a responsive quorum: allowed.
    index = sim.remove(down)
    assert index is not None and committed_by_all(sim, index)
    sim.stabilize()


def test_a_partitioned_new_member_does_not_stall_the_cluster_and_joins_after_healing() -> None:
    sim = settled(3, promote_max_lag=2)
    ldr = sim.leader()
    terms = {i: sim.core(i).term for i in sim.peers}
    new = sim.new_node()
    sim.isolate(new)
    assert sim.add_learner(i=new) == new
    for k in range(10):
        last = sim.propose(b"while-it-is-cut-off-%d" % k)
    # a learner is not needed for any quorum
    assert sim.run_until(lambda: all(sim.core(i).log.applied >= last for i in (1, 2, 3)), 60)
    sim.run(30)
    assert sim.promote(new) is None and sim.last_refusal.reason == Refusal.LEARNER_BEHIND
    assert sim.core(new).term == 0 and sim.core(new).role == Role.FOLLOWER  # it never campaigned
    assert {i: sim.core(i).term for i in terms} == terms  # and disturbed nobody
    sim.heal()
    assert sim.run_until(lambda: sim.core(new).log.applied >= last, 40)
    assert sim.run_until(lambda: sim.promote(new) is not None, 30)
    assert committed_by_all(sim, sim.core(ldr).log.conf_index)
    assert sim.committed_conf().voters == (1, 2, 3, new)
    sim.stabilize()


def test_a_promoted_learner_that_missed_its_promotion_still_votes_for_the_cluster() -> None:
    # etcd's case: the promotion commits on {1, 2, 3} without reaching 4; then
    # the leader dies. The election of {1, 2, 3, 4} needs 4's vote, and 4's log
    # still calls it a learner: it votes anyway, for a candidate that counts it.
    sim = settled(3, promote_max_lag=0)
    ldr = sim.leader()
    new = sim.add_learner()
    assert sim.run_until(lambda: sim.promote(new) is not None, 40)
    sim.drop_if = lambda m: m.src == ldr and m.dst == new and m.type in (MT.APP, MT.SNAP)  # it never gets it
    index = sim.core(ldr).log.conf_index
    assert sim.run_until(lambda: sim.core(ldr).log.committed >= index, 20)
    assert sim.core(new).membership.learners == (new,)  # it does not know
    sim.crash(ldr)
    sim.drop_if = None
    assert sim.run_until(lambda: sim.leader() not in (0, ldr), 60)
    assert sim.stats["learner_votes"] >= 1
    sim.stabilize()
    assert sim.core(new).membership.voters == (1, 2, 3, new)


def test_a_removed_replica_that_never_heard_of_it_does_not_disrupt_the_cluster() -> None:
    sim = settled(3)
    ldr = sim.leader()
    gone, stay = others(sim, ldr)
    sim.partition([gone], [ldr, stay])
    index = sim.remove(gone)
    assert index is not None and committed_by_all(sim, index)
    sim.run(15)  # past the election timeout in which the leader still tries to tell it
    assert sim.core(gone).membership == Membership((1, 2, 3))  # never told
    sim.heal()
    terms = (sim.core(ldr).term, sim.core(stay).term)
    sim.record = True
    sim.run(100)
    assert any(m.type == MT.PRE_VOTE and m.src == gone for m in sim.sent)  # it tries ...
    assert not any(m.type == MT.VOTE and m.src == gone for m in sim.sent)  # ... and never gets past PreVote
    assert sim.leader() == ldr and (sim.core(ldr).term, sim.core(stay).term) == terms
    sim.stabilize()
    assert not sim.nodes[gone].retired and sim.core(gone).role != Role.LEADER


def test_a_leader_that_removed_itself_and_lost_leadership_is_still_needed() -> None:
    # Dissertation §4.2.2: voters {1, 2}; the leader removes itself, the entry
    # does not reach the other voter, and the leader loses its leadership. The
    # other voter cannot win without it (its log is behind), so the old leader,
    # not a voter of its latest configuration, still campaigns, counting only
    # the new voters, commits its removal, and steps down.
    sim = settled(2)
    ldr = sim.leader()
    (other,) = others(sim, ldr)
    sim.drop_if = lambda m: m.src == ldr and m.type == MT.APP
    index = sim.remove(ldr)
    assert index is not None
    sim.run(2)
    sim.isolate(ldr)
    assert sim.run_until(lambda: sim.core(ldr).role != Role.LEADER, 40)
    assert sim.core(other).log.last_index < index
    sim.drop_if = None
    sim.heal()
    assert sim.run_until(lambda: sim.nodes[ldr].retired, 100)
    assert sim.stats["leader_being_removed"] >= 1
    assert sim.run_until(lambda: sim.agreed_leader() == other, 40)
    assert sim.core(other).membership == Membership((other,))
    sim.stabilize()


def test_restarts_rebuild_the_configuration_from_snapshots_and_log_tails() -> None:
    sim = settled(3, promote_max_lag=2)
    ldr = sim.leader()
    new = sim.add_learner()
    assert sim.run_until(lambda: sim.promote(new) is not None, 40)
    assert committed_by_all(sim, sim.core(ldr).log.conf_index)
    gone = others(sim, ldr, new)[0]
    assert sim.remove(gone) is not None
    assert sim.run_until(lambda: sim.nodes[gone].retired, 30)
    for k in range(5):
        last = sim.propose(b"tail-%d" % k)
    assert committed_by_all(sim, last)
    conf = sim.committed_conf()
    for i in sim.peers:
        sim.compact_now(i, sim.core(i).log.applied - 3)  # the last change stays in the tail on some
    for i in sim.peers:
        sim.crash(i)
    for i in sim.peers:
        sim.restart(i)
        assert sim.core(i).membership == conf, i
        assert sim.core(i).log.conf_at(sim.core(i).log.snapshot_index) == sim.core(i).snapshot.meta.conf
    sim.stabilize()
    assert sim.committed_conf() == conf


@pytest.mark.parametrize("seed", [3, 4])
def test_membership_churn_under_crashes(seed: int) -> None:
    sim = Simulator(3, seed, drop=0.05, max_delay=8, compact=0.02, snapshot_chunk_bytes=512, promote_max_lag=10)
    for unit in range(300 * UNITS_PER_TICK):
        if unit % 170 == 0:
            alive = [i for i in sim.peers if sim.nodes[i].alive]
            if len(alive) > 1:
                sim.crash(sim.rng.choice(alive))
        if unit % 170 == 85:
            for i in sim.peers:
                if not sim.nodes[i].alive:
                    sim.restart(i)
        if unit % 40 == 0 and sim.leader():
            conf = sim.core(sim.leader()).membership
            r = sim.rng.random()
            if r < 0.35 and len(conf.members) < 6:
                sim.add_learner()
            elif r < 0.75 and conf.learners:
                sim.promote(sim.rng.choice(conf.learners))
            else:  # a learner, or a voter (the leader too) while at least three remain
                targets = conf.learners + (conf.voters if len(conf.voters) > 2 else ())
                if targets:
                    sim.remove(sim.rng.choice(targets))
        if unit % 7 == 0:
            sim.propose()
        sim.step_time()
    sim.stabilize()
    s = sim.stats
    assert s["learners_added"] and s["promotions"] and s["removals"] and s["retired"], s
    assert s["conf_refused"] and s["crashes"] >= 10, s
    members = sim.members()
    orders = {tuple(v for _, v in sorted(n.applied.items())) for n in sim.nodes.values()
              if n.id in members and n.core is not None}
    upto = min(len(o) for o in orders)
    assert len({o[:upto] for o in orders}) == 1


def test_a_new_leader_changes_membership_only_after_committing_in_its_term() -> None:
    # The single-server bug Ongaro found (raft-dev, 2015), built step by step.
    # Voters {1, 2, 3, 4}, learner 5. Leader 1 promotes 5 (C1 = {1..5}); only 5
    # gets the entry; 1 crashes. 2 is elected by {2, 3, 4} and wants to remove
    # 1 (C2 = {2, 3, 4}) while 4 does not get its appends. Were 2 allowed to
    # append C2 before committing an entry of its term, C2 would commit on
    # {2, 3}; then 1, back, would win term 3 with {1, 4, 5}, a majority of C1
    # whose logs are no newer than its own, and overwrite committed entries
    # (the simulator's leader-completeness check fires). The rule makes 2 wait:
    # its no-op cannot commit without 4, so nothing is committed that 1 lacks.
    # (4 and 5 do not get 2's appends until 1 is back.)
    sim = settled(4, promote_max_lag=0)
    sim.elect(1)
    new = sim.add_learner(to=1)
    assert sim.run_until(lambda: sim.core(new).log.applied >= sim.core(1).log.conf_index, 40)
    sim.drop_if = lambda m: m.src == 1 and m.dst in (2, 3, 4) and m.type in (MT.APP, MT.SNAP)
    assert sim.run_until(lambda: sim.promote(new, to=1) is not None, 20)
    c1 = sim.core(1).log.conf_index
    assert sim.run_until(lambda: sim.core(new).log.last_index >= c1, 10)
    sim.crash(1)
    sim.drop_if = lambda m: m.src == 2 and m.dst in (4, new) and m.type in (MT.APP, MT.SNAP)
    sim.elect(2)
    refusals = []
    for _ in range(8):
        if sim.remove(1, to=2) is None:
            refusals.append(sim.last_refusal.reason)
        sim.run(1)
    sim.partition([1, 4, new], [2, 3])
    sim.drop_if = None
    sim.restart(1)
    sim.run(60)  # 1 may win term 3 now: nothing committed is lost (the simulator checks)
    assert refusals and set(refusals) == {Refusal.TERM_NOT_COMMITTED}
    sim.stabilize()
