"""Leases in the state machine: grant, renew, checkpoint, expire, revoke, attached keys."""

from __future__ import annotations

import pytest

from kv.errors import InvalidRequest, LeaseExists, LeaseNotFound, RequestTooLarge
from kv.requests import (
    MAX_LEASE_TTL_MS,
    Compare,
    DeleteRange,
    LeaseCheckpoint,
    LeaseExpire,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRevoke,
    Put,
    Range,
    Txn,
)
from kv.responses import LeaseGrantResponse, LeaseRevokeResponse
from kv.state_machine import KVStateMachine
from kv.validation import validate
from tests.test_kv_helpers import Driver

ALL = Range(b"\0", b"\0")


def keys(d: Driver) -> list[bytes]:
    return [kv.key for kv in d.sm.read(ALL, 1).kvs]


def test_grant_picks_fresh_ids_and_refuses_taken_ones():
    d = Driver()
    a = d.ok(LeaseGrant(5000))
    b = d.ok(LeaseGrant(5000))
    assert isinstance(a, LeaseGrantResponse) and (a.id, a.ttl_ms) == (1, 5000)
    assert b.id == 2
    assert isinstance(d.do(LeaseGrant(5000, 2)), LeaseExists)
    assert d.ok(LeaseGrant(7000, 10)).id == 10
    assert d.ok(LeaseGrant(5000)).id == 11  # never below an id handed out
    assert d.sm.leases.ids() == [1, 2, 10, 11]
    assert d.sm.revision == 1  # leases take no revision


def test_put_needs_an_existing_lease_and_txn_applies_nothing_without_it():
    d = Driver()
    assert isinstance(d.do(Put(b"k", b"v", lease=9)), LeaseNotFound)
    lease = d.ok(LeaseGrant(5000)).id
    txn = Txn((), (Put(b"a", b"1"), Put(b"b", b"2", lease=99)), ())
    assert isinstance(d.do(txn), LeaseNotFound)
    assert keys(d) == [] and d.sm.revision == 1
    d.ok(Txn((), (Put(b"a", b"1", lease=lease), Put(b"b", b"2")), ()))
    assert d.sm.leases.get(lease).keys == {b"a"}


def test_revoke_deletes_attached_keys_at_one_revision():
    d = Driver()
    lease = d.ok(LeaseGrant(5000)).id
    d.ok(Put(b"a", b"1", lease=lease))
    d.ok(Put(b"b", b"2", lease=lease))
    d.ok(Put(b"c", b"3"))
    rev = d.sm.revision
    r = d.ok(LeaseRevoke(lease))
    assert isinstance(r, LeaseRevokeResponse) and r.deleted == 2
    assert r.header.revision == rev + 1 == d.sm.revision
    assert keys(d) == [b"c"]
    events = d.sm.changes_since(rev + 1, b"\0", b"\0")
    assert [(e.type, e.kv.key, e.revision) for e in events] == [("delete", b"a", rev + 1), ("delete", b"b", rev + 1)]
    assert isinstance(d.do(LeaseRevoke(lease)), LeaseNotFound)
    assert isinstance(d.do(LeaseKeepAlive(lease)), LeaseNotFound)


def test_keys_follow_their_latest_lease():
    d = Driver()
    one = d.ok(LeaseGrant(5000)).id
    two = d.ok(LeaseGrant(5000)).id
    d.ok(Put(b"k", b"v", lease=one))
    d.ok(Put(b"k", b"w", lease=two))  # moves to lease two
    d.ok(Put(b"j", b"v", lease=one))
    d.ok(DeleteRange(b"j"))  # detached by the delete
    d.ok(Put(b"j", b"again"))  # re-created without a lease
    d.ok(Put(b"k", b"", ignore_value=True, ignore_lease=True))  # keeps lease two
    assert d.sm.leases.get(one).keys == set()
    assert d.sm.leases.get(two).keys == {b"k"}
    assert d.ok(LeaseRevoke(one)).deleted == 0
    assert keys(d) == [b"j", b"k"]
    d.ok(LeaseRevoke(two))
    assert keys(d) == [b"j"]


def test_compare_on_lease_field():
    d = Driver()
    lease = d.ok(LeaseGrant(5000)).id
    d.ok(Put(b"k", b"v", lease=lease))
    assert d.ok(Txn((Compare(b"k", "lease", "==", lease),), (), ())).succeeded
    d.ok(LeaseRevoke(lease))
    assert d.ok(Txn((Compare(b"k", "lease", "==", 0),), (), ())).succeeded


def test_renew_checkpoint_and_expiry_epochs():
    d = Driver()
    lease = d.ok(LeaseGrant(6000)).id
    grant_index = d.index
    assert d.sm.leases.get(lease).epoch == grant_index
    epoch = d.sm.leases.get(lease).epoch
    assert d.ok(LeaseCheckpoint(((lease, 2500, epoch), (404, 1, 0)))).updated == 1
    assert d.sm.leases.get(lease).remaining_ms == 2500
    d.ok(LeaseCheckpoint(((lease, 10**9, epoch),)))
    assert d.sm.leases.get(lease).remaining_ms == 6000  # never above the TTL
    d.ok(Put(b"k", b"v", lease=lease))
    d.ok(LeaseKeepAlive(lease))
    renew_index = d.index
    lease_state = d.sm.leases.get(lease)
    assert (lease_state.remaining_ms, lease_state.epoch) == (6000, renew_index)
    # The leader decided "expired" before seeing the renewal: stale, nothing happens.
    assert isinstance(d.do(LeaseExpire(lease, grant_index)), LeaseNotFound)
    assert keys(d) == [b"k"]
    r = d.ok(LeaseExpire(lease, renew_index))
    assert r.deleted == 1 and keys(d) == []
    assert lease not in d.sm.leases


def test_events_for_the_leaders_keeper():
    d = Driver()
    lease = d.ok(LeaseGrant(3000)).id
    d.ok(LeaseKeepAlive(lease))
    d.ok(LeaseCheckpoint(((lease, 1000, d.sm.leases.get(lease).epoch),)))
    d.ok(LeaseRevoke(lease))
    assert d.sm.leases.events == [("set", 1, 3000), ("set", 1, 3000), ("checkpoint", 1, 1000), ("gone", 1, 0)]


def test_snapshot_keeps_leases_and_rebuilds_attachments():
    d = Driver()
    a = d.ok(LeaseGrant(5000)).id
    b = d.ok(LeaseGrant(9000, 77)).id
    d.ok(Put(b"x", b"1", lease=a))
    d.ok(Put(b"y", b"2", lease=b))
    d.ok(Put(b"z", b"3", lease=b))
    d.ok(LeaseCheckpoint(((b, 4000, d.sm.leases.get(b).epoch),)))
    snap = d.sm.snapshot()
    other = KVStateMachine()
    other.restore(snap)
    assert other.snapshot() == snap
    assert other.leases.get(b).keys == {b"y", b"z"} and other.leases.get(b).remaining_ms == 4000
    assert other.leases.events == [("reset", 0, 0)]
    assert other.apply(d.index + 1, 1, _batch(LeaseGrant(5000))) [0].id == 78


def test_lease_validation():
    with pytest.raises(InvalidRequest, match="ttl_ms must be >= 1"):
        validate(LeaseGrant(0))
    with pytest.raises(InvalidRequest, match="longer than the maximum"):
        validate(LeaseGrant(MAX_LEASE_TTL_MS + 1))
    with pytest.raises(InvalidRequest, match="must be an int"):
        validate(LeaseGrant(1.5))  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        validate(LeaseRevoke(0))
    with pytest.raises(InvalidRequest):
        validate(LeaseCheckpoint(((1, -5, 0),)))
    with pytest.raises(InvalidRequest, match="not allowed inside a Txn"):
        validate(Txn((), (LeaseGrant(5000),), ()))  # type: ignore[arg-type]
    big = LeaseCheckpoint(tuple((i, 1000, 1) for i in range(1, 200_000)))
    with pytest.raises(RequestTooLarge):
        validate(big)


def _batch(op):
    from kv.batch import Command, encode_batch

    return encode_batch([Command("", 0, 0, op)], 1000.0)
