"""Leases and sessions on a real local Ray instance: expiry, keep-alive, revoke,
and lease clocks that survive a leader change."""

from __future__ import annotations

import time

import pytest

from client import InvalidRequest, LeaseNotFound
from kv.errors import LeaseExists

from tests.helpers import wait_for

pytestmark = pytest.mark.ray


def test_lease_lifecycle_and_errors(c):
    lease = c.lease(0.1)
    assert lease.ttl == 2.0  # raised to the minimum, longer than an election
    c.put("l/a", "1", lease=lease)
    c.put("l/b", "2", lease=lease.id)
    st = lease.time_to_live(keys=True)
    assert st.id == lease.id and st.ttl == 2.0 and 0 < st.remaining <= 2.0
    assert sorted(st.keys) == [b"l/a", b"l/b"]
    assert [s.id for s in c.leases()] == [lease.id]
    assert lease.refresh() == 2.0
    assert lease.revoke() == 2
    assert c.get_prefix("l/") == []
    for call in (lease.refresh, lease.revoke, lease.remaining_ttl):
        with pytest.raises(LeaseNotFound):
            call()
    with pytest.raises(LeaseNotFound):
        c.put("l/c", "3", lease=lease)
    with pytest.raises(LeaseNotFound):
        c.put("l/c", "3", lease=999_999)
    with pytest.raises(LeaseExists):
        other = c.lease(5, id=4242)
        c.lease(5, id=4242)
    other.revoke()
    for bad in (0, -1, "10", True, float("nan"), 10**12):
        with pytest.raises(InvalidRequest):
            c.lease(bad)
    with pytest.raises(InvalidRequest):
        c.put("k", "v", lease="7")
    assert c.get_prefix("l/") == []


def test_lease_expires_on_the_leaders_clock_and_takes_its_keys(c):
    lease = c.lease(2)
    c.put("e/k", "v", lease=lease)
    c.put("e/keep", "v")
    start = time.monotonic()
    assert wait_for(lambda: c.get("e/k") is None, 10)
    took = time.monotonic() - start
    assert 1.5 <= took <= 4.0, took
    assert c.get("e/keep") is not None
    with pytest.raises(LeaseNotFound):
        lease.remaining_ttl()


def test_session_keeps_its_lease_alive_across_leader_failover(cluster, c):
    with c.session(ttl=3) as session:
        c.put("s/k", "v", lease=session.lease)
        old = cluster.leader()
        cluster.kill_replica(old)
        time.sleep(5)  # longer than the TTL: only renewals through the new leader keep it
        assert c.get("s/k") is not None
        assert not session.lost and session.remaining() > 0
        cluster.restart_replica(old)
    assert c.get("s/k") is None  # closing revoked it
    assert session.lost


def test_leader_change_neither_renews_nor_shortens_a_lease(cluster, c):
    """The new leader starts from the remaining TTL the old one checkpointed,
    not from a full TTL (etcd #9888) and not from zero."""
    lease = c.lease(6)
    c.put("f/k", "v", lease=lease)
    start = time.monotonic()
    time.sleep(3)
    old = cluster.leader()
    cluster.kill_replica(old)
    assert wait_for(lambda: c.get("f/k") is None, 15)
    took = time.monotonic() - start
    # Not before its TTL; at most a checkpoint interval plus an election and
    # the client's polling later. A full TTL restart would take about 9 s.
    assert 5.9 <= took <= 8.0, took
    cluster.restart_replica(old)


def test_session_reports_loss_when_its_lease_is_revoked(c):
    session = c.session(ttl=2)
    lost = []
    session.on_lost(lambda s: lost.append(s.id))
    c.lease_revoke(session.id)
    assert session.wait_lost(5)
    assert lost == [session.id] and session.remaining() == 0
    session.close()  # idempotent, nothing to revoke
