"""Unit tests of snapshots in the sans-IO core: compaction, the chunked
InstallSnapshot sender (window, acknowledgements, resends, restarts) and the
receiver (assembly, stale and out-of-order chunks, figure 13 install rule)."""

from __future__ import annotations

import pytest

from raft_actors.core import Config, RaftCore, Role
from raft_actors.membership import Membership
from raft_actors.progress import ProgressState
from raft_actors.types import (
    Entry,
    HardState,
    Message,
    MessageType as MT,
    PersistedState,
    Ready,
    Snapshot,
    SnapshotMeta,
)
from tests.helpers import drain, sent

PEERS = (1, 2, 3)
CONF = Membership(PEERS)  # the configuration every snapshot here records


def make_leader(entries: int = 10, compact_to: int = 8, data: bytes = b"0123456789abcdef", **cfg) -> RaftCore:
    """Replica 1 leads term 1 with `entries` entries (plus its no-op), applied and compacted to `compact_to`."""
    core = RaftCore(Config(id=1, peers=PEERS, **cfg))
    core.campaign()
    core.step(Message(MT.PRE_VOTE_RESP, 2, 1, term=1))
    core.step(Message(MT.VOTE_RESP, 2, 1, term=1))
    assert core.role == Role.LEADER
    core.propose([b"e%d" % i for i in range(entries)])
    drain(core)
    core.step(Message(MT.APP_RESP, 2, 1, term=1, index=core.log.last_index))
    drain(core)
    assert core.log.applied == core.log.last_index == entries + 1
    if compact_to:
        assert core.compact(compact_to, data) == SnapshotMeta(compact_to, 1, CONF)
    return core


def lag(core: RaftCore, follower: int = 3) -> list[Ready]:
    """The follower says its log is empty: it needs entries the leader compacted."""
    pr = core.progress[follower]
    core.step(Message(MT.APP_RESP, follower, 1, term=core.term, index=pr.next - 1, reject=True, reject_hint=0))
    return drain(core)


def make_follower(entries: list[Entry], commit: int, term: int = 1) -> RaftCore:
    return RaftCore(Config(id=2, peers=PEERS), PersistedState(HardState(term, 0, commit), SnapshotMeta(), tuple(entries)))


def chunks(data: bytes, index: int, term: int, size: int, leader_term: int = 2, src: int = 1) -> list[Message]:
    pieces = [data[o : o + size] for o in range(0, len(data), size)] or [b""]
    return [Message(MT.SNAP, src, 2, term=leader_term, index=index, log_term=term, snap_offset=k * size,
                    snap_chunk=p, snap_done=k == len(pieces) - 1) for k, p in enumerate(pieces)]


def ents(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, b"x%d" % i) for i in range(first, last + 1)]


# -- compaction ------------------------------------------------------------------------
def test_compact_drops_the_prefix_and_keeps_the_snapshot() -> None:
    core = make_leader(entries=10, compact_to=0)
    assert core.compact(6, b"six") == SnapshotMeta(6, 1, CONF)
    assert core.log.first_index == 7 and core.snapshot == Snapshot(SnapshotMeta(6, 1, CONF), b"six")
    assert core.status()["snapshot_index"] == 6
    assert core.compact(6, b"again") is None and core.compact(3, b"older") is None
    with pytest.raises(ValueError, match="applied"):
        core.compact(core.log.applied + 1, b"")
    core.propose([b"more"])
    core.ready()
    with pytest.raises(RuntimeError, match="Ready"):
        core.compact(7, b"")


def test_a_core_restarted_from_a_snapshot_knows_it_and_applies_after_it() -> None:
    persisted = PersistedState(HardState(3, 0, 12), SnapshotMeta(10, 2), tuple(ents(11, 14, term=3)), b"state@10")
    core = RaftCore(Config(id=2, peers=PEERS), persisted)
    # (a snapshot saved without its configuration gets the initial one, Config.peers)
    assert core.snapshot == Snapshot(SnapshotMeta(10, 2, CONF), b"state@10")
    assert (core.log.applied, core.log.committed) == (10, 12)
    rd = core.ready()
    assert rd.snapshot is None  # the driver restores from PersistedState.snapshot_data itself
    assert [e.index for e in rd.committed] == [11, 12]


# -- the sender ----------------------------------------------------------------------
def test_leader_sends_its_snapshot_in_chunks_within_a_window() -> None:
    data = bytes(range(10))
    core = make_leader(data=data, snapshot_chunk_bytes=3, max_inflight_snapshot_chunks=2)
    snaps = sent(lag(core), MT.SNAP, 3)
    assert [(m.snap_offset, m.snap_chunk, m.snap_done) for m in snaps] == [(0, data[0:3], False), (3, data[3:6], False)]
    assert all((m.index, m.log_term, m.term) == (8, 1, 1) for m in snaps)
    assert core.progress[3].state == ProgressState.SNAPSHOT
    core.propose([b"new"])  # proposals do not push chunks past the window
    assert sent(drain(core), MT.SNAP, 3) == []
    core.step(Message(MT.SNAP_RESP, 3, 1, term=1, index=8, log_term=1, snap_offset=3))
    more = sent(drain(core), MT.SNAP, 3)
    assert [(m.snap_offset, m.snap_done) for m in more] == [(6, False)]
    core.step(Message(MT.SNAP_RESP, 3, 1, term=1, index=8, log_term=1, snap_offset=9))
    last = sent(drain(core), MT.SNAP, 3)
    assert [(m.snap_offset, m.snap_chunk, m.snap_done) for m in last] == [(9, data[9:], True)]
    # Installed: the leader probes right after the snapshot and replicates from there.
    core.step(Message(MT.SNAP_RESP, 3, 1, term=1, index=8, log_term=1, snap_offset=10, snap_done=True))
    apps = sent(drain(core), MT.APP, 3)
    assert core.progress[3].state == ProgressState.PROBE and core.progress[3].match == 8
    assert apps and (apps[0].index, apps[0].log_term) == (8, 1) and apps[0].entries[0].index == 9


def test_a_resend_request_rewinds_to_the_follower_offset() -> None:
    core = make_leader(data=bytes(12), snapshot_chunk_bytes=3, max_inflight_snapshot_chunks=3)
    assert [m.snap_offset for m in sent(lag(core), MT.SNAP, 3)] == [0, 3, 6]
    # chunk 3 was lost: the follower holds 3 bytes and asks from there
    core.step(Message(MT.SNAP_RESP, 3, 1, term=1, index=8, log_term=1, snap_offset=3, reject=True))
    assert [m.snap_offset for m in sent(drain(core), MT.SNAP, 3)] == [3, 6, 9]


def test_a_stalled_transfer_resends_from_the_last_acknowledged_chunk() -> None:
    core = make_leader(data=bytes(12), snapshot_chunk_bytes=3, max_inflight_snapshot_chunks=2,
                       snapshot_retry_ticks=4, election_tick=20)
    assert [m.snap_offset for m in sent(lag(core), MT.SNAP, 3)] == [0, 3]
    core.step(Message(MT.SNAP_RESP, 3, 1, term=1, index=8, log_term=1, snap_offset=3))
    assert [m.snap_offset for m in sent(drain(core), MT.SNAP, 3)] == [6]
    # the chunk at 3 or its acknowledgement is lost; nothing moves for 4 ticks
    resent = []
    for _ in range(4):
        core.tick()
        core.step(Message(MT.HEARTBEAT_RESP, 3, 1, term=1))  # alive, but the transfer is stuck
        resent += sent(drain(core), MT.SNAP, 3)
    assert [m.snap_offset for m in resent] == [3, 6]


def test_a_newer_snapshot_restarts_the_transfer() -> None:
    core = make_leader(entries=10, compact_to=5, data=b"old-old-old", snapshot_chunk_bytes=4)
    assert {m.index for m in sent(lag(core), MT.SNAP, 3)} == {5}
    core.compact(9, b"new-new-new")
    snaps = sent(drain(core), MT.SNAP, 3)
    assert snaps and all(m.index == 9 for m in snaps) and snaps[0].snap_offset == 0
    # acknowledgements of the old transfer are ignored
    core.step(Message(MT.SNAP_RESP, 3, 1, term=1, index=5, log_term=1, snap_offset=8))
    assert sent(drain(core), MT.SNAP, 3) == []


def test_a_deposed_leader_stops_sending_its_snapshot() -> None:
    core = make_leader(data=bytes(30), snapshot_chunk_bytes=3, max_inflight_snapshot_chunks=1, snapshot_retry_ticks=1)
    assert sent(lag(core), MT.SNAP, 3)
    core.step(Message(MT.APP, 2, 1, term=2, index=core.log.last_index, log_term=1))  # a leader of term 2
    assert core.role == Role.FOLLOWER
    for _ in range(5):
        core.tick()
    assert sent(drain(core), MT.SNAP) == []


def test_a_follower_that_catches_up_by_appends_leaves_the_snapshot_state() -> None:
    core = make_leader(snapshot_chunk_bytes=2)
    lag(core)
    core.step(Message(MT.APP_RESP, 3, 1, term=1, index=core.log.last_index))
    assert core.progress[3].state == ProgressState.REPLICATE


# -- the receiver ----------------------------------------------------------------------
def test_follower_assembles_chunks_and_replaces_a_log_that_disagrees() -> None:
    core = make_follower(ents(1, 6), commit=2)  # all term 1; the snapshot says entry 9 is of term 2
    data = b"the leader's state machine"
    out = []
    for m in chunks(data, 9, 2, size=5):
        core.step(m)
        out += drain(core)
    resp = sent(out, MT.SNAP_RESP)
    assert [r.snap_offset for r in resp[:-1]] == [5, 10, 15, 20, 25] and not any(r.reject for r in resp)
    assert resp[-1].snap_done and resp[-1].index == 9
    installed = [rd for rd in out if rd.snapshot is not None]
    assert len(installed) == 1 and installed[0].snapshot == Snapshot(SnapshotMeta(9, 2, CONF), data)
    rd = installed[0]
    assert rd.hard_state.commit == 9 and rd.entries == [] and rd.committed == [] and not rd.early_send
    lg = core.log
    assert (lg.snapshot_index, lg.last_index, lg.committed, lg.applied) == (9, 9, 9, 9)
    assert core.snapshot == rd.snapshot


def test_follower_log_holding_the_snapshot_entry_keeps_what_follows() -> None:
    core = make_follower(ents(1, 10), commit=3)
    for m in chunks(b"state@6", 6, 1, size=4):
        core.step(m)
    rd = core.ready()
    assert rd.snapshot.meta == SnapshotMeta(6, 1, CONF)
    assert (core.log.snapshot_index, core.log.last_index, core.log.applied) == (6, 10, 6)
    assert core.log.entries == ents(7, 10)


def test_follower_log_that_disagrees_at_the_snapshot_entry_is_replaced_whole() -> None:
    core = make_follower(ents(1, 10), commit=3)  # entry 6 is of term 1; the snapshot says term 2
    for m in chunks(b"state@6", 6, 2, size=4):
        core.step(m)
    rd = core.ready()
    assert rd.snapshot.meta == SnapshotMeta(6, 2, CONF)
    assert (core.log.snapshot_index, core.log.last_index, core.log.entries) == (6, 6, [])
    assert core.log.is_up_to_date(6, 2) and not core.log.is_up_to_date(10, 1)


def test_a_snapshot_at_or_below_the_commit_index_is_only_acknowledged() -> None:
    core = make_follower(ents(1, 10), commit=8)
    core.step(chunks(b"old", 5, 1, size=10)[0])
    rd = core.ready()
    assert rd.snapshot is None and core.log.committed == 8 and core.log.last_index == 10
    [resp] = [m for m in rd.messages if m.type == MT.SNAP_RESP]
    assert resp.snap_done and resp.index == 5


def test_out_of_order_and_duplicate_chunks() -> None:
    core = make_follower([], commit=0)
    c = chunks(b"abcdefghij", 7, 2, size=3)  # offsets 0, 3, 6, 9
    core.step(c[1])  # a gap: ask from 0, once
    core.step(c[2])
    resp = sent(drain(core), MT.SNAP_RESP)
    assert [(r.snap_offset, r.reject) for r in resp] == [(0, True)]
    core.step(c[0])
    core.step(c[0])  # a duplicate: say where we are
    core.step(c[1])
    resp = sent(drain(core), MT.SNAP_RESP)
    assert [(r.snap_offset, r.reject) for r in resp] == [(3, False), (3, False), (6, False)]
    core.step(c[3])  # 6..9 missing: ask from 6
    assert [(r.snap_offset, r.reject) for r in sent(drain(core), MT.SNAP_RESP)] == [(6, True)]
    core.step(c[2])
    core.step(c[3])
    out = drain(core)
    assert [rd.snapshot.data for rd in out if rd.snapshot] == [b"abcdefghij"]


def test_chunks_of_a_replaced_snapshot_or_an_old_leader_are_not_mixed_in() -> None:
    core = make_follower([], commit=0)
    newer = chunks(b"NEWNEWNEW", 9, 2, size=3, leader_term=2)
    older = chunks(b"oldoldold", 5, 2, size=3, leader_term=2)
    core.step(newer[0])
    core.step(older[0])  # a late chunk of the snapshot the leader replaced: ignored
    core.step(newer[1])
    # A new leader (term 3) starts over; the term-2 assembly is dropped.
    fresh = chunks(b"FRESHDATA", 11, 3, size=3, leader_term=3)
    core.step(fresh[0])
    core.step(newer[2])  # stale term: answered with our term, not assembled
    core.step(fresh[1])
    core.step(fresh[2])
    out = drain(core)
    assert [rd.snapshot for rd in out if rd.snapshot] == [Snapshot(SnapshotMeta(11, 3, CONF), b"FRESHDATA")]
    assert core.term == 3 and core.lead == 1


def test_a_restarted_follower_asks_for_the_transfer_from_the_start() -> None:
    c = chunks(b"0123456789", 7, 1, size=4)
    core = make_follower([], commit=0)
    core.step(c[0])
    core = make_follower([], commit=0)  # crashed: the partial snapshot is gone
    core.step(c[1])
    [resp] = sent(drain(core), MT.SNAP_RESP)
    assert (resp.snap_offset, resp.reject) == (0, True)
