"""The leader's lease clocks, driven with a fake clock and a real state machine."""

from __future__ import annotations

from kv.requests import LeaseCheckpoint, LeaseExpire, LeaseGrant, LeaseKeepAlive
from raft_actors.leases import LeaseKeeper
from tests.test_kv_helpers import Driver


def _apply_all(d: Driver, ops) -> None:
    for op in ops:
        d.do(op)


def test_new_leader_never_expires_before_the_recorded_remaining_ttl():
    d = Driver()
    lease = d.ok(LeaseGrant(4000)).id
    k = LeaseKeeper(checkpoint_s=0.5)
    k.become_leader(d.sm.leases, now=100.0)
    assert k.remaining_ms(lease, 100.0) == 4000
    assert k.due(d.sm.leases, 103.9) == [LeaseCheckpoint(((lease, 100, d.sm.leases.get(lease).epoch),))]
    assert k.due(d.sm.leases, 104.0) == [LeaseExpire(lease, d.sm.leases.get(lease).epoch)]
    assert k.due(d.sm.leases, 104.5) == []  # proposed already; not again at once
    assert k.due(d.sm.leases, 105.1)[0] == LeaseExpire(lease, d.sm.leases.get(lease).epoch)  # re-proposed


def test_checkpoints_bound_how_long_changing_leaders_keep_a_lease():
    """etcd #9888: each new leader restarted the full TTL. Here the remaining
    TTL recorded in the log runs down across leader changes."""
    d = Driver()
    lease = d.ok(LeaseGrant(5000)).id
    now = 0.0
    expired_at = None
    for term in range(40):  # a new leader every 0.8 s
        k = LeaseKeeper(checkpoint_s=0.5)
        k.become_leader(d.sm.leases, now)
        for _ in range(8):
            now += 0.1
            ops = k.due(d.sm.leases, now)
            _apply_all(d, ops)
            k.observe(d.sm.leases, now)
            if lease not in d.sm.leases:
                expired_at = now
                break
        if expired_at is not None:
            break
    assert expired_at is not None
    # One TTL, plus at most one checkpoint interval lost per leader change.
    assert 5.0 <= expired_at <= 5.0 + 0.5 * (expired_at / 0.8 + 1)


def test_renewal_after_the_decision_keeps_the_lease():
    d = Driver()
    lease = d.ok(LeaseGrant(2000)).id
    k = LeaseKeeper()
    k.become_leader(d.sm.leases, 0.0)
    [expire] = [op for op in k.due(d.sm.leases, 2.5) if isinstance(op, LeaseExpire)]
    d.ok(LeaseKeepAlive(lease))  # committed before the expiry
    k.observe(d.sm.leases, 2.6)
    d.do(expire)
    assert lease in d.sm.leases
    assert k.remaining_ms(lease, 2.6) == 2000


def test_followers_keep_no_deadlines_and_drain_events():
    d = Driver()
    d.ok(LeaseGrant(2000))
    k = LeaseKeeper()
    k.observe(d.sm.leases, 0.0)
    assert d.sm.leases.events == []
    assert k.due(d.sm.leases, 100.0) == []
    k.become_leader(d.sm.leases, 0.0)
    k.step_down()
    assert k.due(d.sm.leases, 100.0) == []
