"""Automatic history retention decided by the leader."""

from __future__ import annotations

from raft_actors.retention import Retention


def test_by_revision_count_in_steps():
    r = Retention(keep_revisions=1000)
    assert r.due(0.0, 500, 0) is None  # not enough history yet
    assert r.due(1.0, 1500, 0) == 500
    assert r.due(1.5, 1600, 500) is None  # checked once a second
    assert r.due(2.0, 1505, 500) is None  # less than a 1% step
    assert r.due(3.0, 1600, 500) == 600


def test_by_age_keeps_what_the_leader_saw_written_recently():
    r = Retention(keep_seconds=10)
    revs = {}
    for t in range(0, 25):
        revs[t] = 100 + 10 * t
        got = r.due(float(t), revs[t], 0 if t < 11 else revs[t - 11])
        if t < 10:
            assert got is None
        else:
            assert got == revs[t - 10]
    r.reset()  # new leader: nothing is known to be old yet
    assert r.due(30.0, 500, 300) is None


def test_both_limits_keep_the_larger_history_and_off_by_default():
    r = Retention(keep_revisions=100, keep_seconds=5)
    r.due(0.0, 1000, 0)
    assert r.due(5.0, 1050, 0) == 950  # by count 950, by age 1000: keep more
    assert not Retention().enabled and Retention().due(100.0, 10**6, 0) is None
