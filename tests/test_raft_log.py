"""Unit tests of the in-memory Raft log and the per-follower progress."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft_actors.core import Config
from raft_actors.log import RaftLog
from raft_actors.progress import Progress, ProgressState
from raft_actors.types import Entry, HardState, PersistedState, SnapshotMeta


def make_log(terms: list[int], snap: SnapshotMeta = SnapshotMeta(), commit: int = 0) -> RaftLog:
    entries = tuple(Entry(t, snap.index + 1 + i, b"%d" % i) for i, t in enumerate(terms))
    return RaftLog(PersistedState(HardState(max(terms, default=0), 0, commit), snap, entries))


@given(st.lists(st.integers(1, 6), max_size=40).map(sorted), st.integers(0, 45), st.integers(0, 7),
       st.integers(0, 5))
@settings(max_examples=300)
def test_find_conflict_by_term_matches_a_linear_scan(terms, index, term, snap_index):
    snap = SnapshotMeta(snap_index, terms[0] if snap_index and terms else 0)
    lg = make_log(terms, snap)
    got = lg.find_conflict_by_term(index, term)
    # reference: walk down from min(index, last) to the first index whose term <= term
    i = min(index, lg.last_index)
    while i > lg.snapshot_index and lg.term(i) > term:
        i -= 1
    if i <= lg.snapshot_index:
        i = max(i, 0)
    expect_term = lg.term(i) if lg.term(i) is not None else 0
    assert got == (i, expect_term)


def test_maybe_append_truncates_only_the_conflicting_suffix():
    lg = make_log([1, 1, 2, 2])
    assert lg.maybe_append(2, 1, 0, [Entry(3, 3, b"x"), Entry(3, 4, b"y"), Entry(3, 5, b"z")]) == 5
    assert [lg.term(i) for i in range(1, 6)] == [1, 1, 3, 3, 3]
    assert lg.stable == 2  # entries 3.. must be persisted again
    assert lg.maybe_append(4, 2, 0, []) is None  # consistency check fails: term at 4 is now 3


def test_duplicate_append_changes_nothing_and_commit_never_passes_the_match():
    lg = make_log([1, 1, 1])
    assert lg.maybe_append(1, 1, 10, [Entry(1, 2, b"1")]) == 2
    assert lg.last_index == 3 and lg.stable == 3  # nothing rewritten
    assert lg.committed == 2  # min(leader commit, last new entry)


def test_committed_entries_are_never_overwritten():
    lg = make_log([1, 1, 1], commit=2)
    with pytest.raises(AssertionError):
        lg.append([Entry(2, 2, b"no")])


def test_stable_to_ignores_an_entry_replaced_meanwhile():
    lg = make_log([1])
    lg.append([Entry(1, 2, b"a"), Entry(1, 3, b"b")])
    lg.append([Entry(2, 3, b"c")])  # index 3 replaced before the driver reported it durable
    lg.stable_to(3, 1)
    assert lg.stable == 1  # the durable (3, term 1) is gone; (3, term 2) is not durable yet
    assert lg.unstable()[-1] == Entry(2, 3, b"c")


def test_up_to_date_compares_last_term_then_length():
    lg = make_log([1, 2, 2])
    assert lg.is_up_to_date(1, 3)
    assert lg.is_up_to_date(3, 2)
    assert not lg.is_up_to_date(2, 2)
    assert not lg.is_up_to_date(10, 1)


def test_progress_probe_then_replicate_with_a_cap():
    pr = Progress(next_index=5, max_msgs=2, max_bytes=10**9)
    assert pr.state == ProgressState.PROBE and not pr.is_paused()
    pr.sent(5, 10)
    assert pr.is_paused()  # one probe at a time
    assert pr.maybe_decrease(rejected=4, hint=2)
    assert pr.next == 3 and not pr.is_paused()
    assert pr.maybe_update(4)
    pr.become_replicate()
    pr.sent(6, 10)
    pr.sent(8, 10)
    assert pr.is_paused() and pr.next == 9  # pipelined up to the cap
    pr.free_to(6)
    assert not pr.is_paused()
    assert not pr.maybe_decrease(rejected=3, hint=0)  # stale rejection below match


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        Config(id=0, peers=(0, 1))
    with pytest.raises(ValueError):
        Config(id=4, peers=(1, 2, 3))
    with pytest.raises(ValueError):
        Config(id=1, peers=(1, 1, 2))
    with pytest.raises(ValueError):
        Config(id=1, peers=(1, 2, 3), heartbeat_tick=10, election_tick=10)


def test_compact_and_restore_keep_the_cursors_in_order():
    lg = make_log([1, 1, 1, 1], commit=4)
    lg.append([Entry(1, 5, b"a"), Entry(1, 6, b"b")])  # not yet durable
    lg.commit_to(6)
    lg.applied_to(6)
    lg.compact(5, 1)
    # invariant: snapshot_index <= stable: what a snapshot covers is never handed out to persist
    assert (lg.snapshot_index, lg.stable) == (5, 5) and lg.unstable() == [Entry(1, 6, b"b")]
    with pytest.raises(AssertionError, match="past applied"):
        lg.compact(7, 1)
    with pytest.raises(AssertionError, match="not past commit"):
        lg.restore(6, 1)
    assert lg.restore(9, 2) is False  # past our end: nothing to keep
    assert (lg.snapshot_index, lg.applied, lg.committed, lg.stable, lg.last_index) == (9, 9, 9, 9, 9)
