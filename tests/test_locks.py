"""Locks and elections on a real local Ray instance: mutual exclusion judged by
fencing tokens (also across leader fail-over and replica loss), fairness,
timeouts, lost leases, elections and their hand-over."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import ray

from client import Put
from client.elected import LeaderElected, leader_only
from kv.errors import InvalidRequest, LockNotHeld, LockTimeout, NotElectionLeader

from tests.helpers import wait_for

pytestmark = pytest.mark.ray


# -- locks -------------------------------------------------------------------------


def test_lock_tokens_timeout_and_release(c):
    with c.lock("a", ttl=5) as first:
        assert first.is_held()
        t1 = first.fencing_token
        assert first.put("guarded", "1").header.revision > t1
        other = c.lock("a", ttl=5, timeout=0.5)
        start = time.monotonic()
        with pytest.raises(LockTimeout):
            other.acquire()
        assert time.monotonic() - start < 5
        # the timed-out waiter left nothing behind in the queue
        assert len(c.get_prefix("__raftkv/lock/a/")) == 1
    assert not first.is_held() and first.fencing_token is None
    with c.lock("a") as second:
        assert second.fencing_token > t1
    with pytest.raises(LockNotHeld):
        first.put("guarded", "stale")
    with pytest.raises(LockNotHeld):
        first.fence()
    with pytest.raises(InvalidRequest):
        c.lock("")
    assert c.get_prefix("__raftkv/") == []  # sessions revoked, keys gone


def test_waiters_get_the_lock_in_arrival_order(c):
    order: list[int] = []
    holder = c.lock("fair", ttl=5)
    holder.acquire()
    threads = []
    for i in range(4):
        t = threading.Thread(target=lambda i=i: _take_and_record(c, i, order))
        t.start()
        threads.append(t)
        # arrival order = order the queue keys were written
        assert wait_for(lambda n=i + 2: len(c.get_prefix("__raftkv/lock/fair/")) == n, 30)
    holder.release()
    for t in threads:
        t.join(30)
    assert order == [0, 1, 2, 3]


def _take_and_record(c, i, order):
    with c.lock("fair", ttl=5):
        order.append(i)
        time.sleep(0.05)


def test_async_lock_and_txn_builder(c):
    async def main():
        async with c.lock("al", ttl=5) as lock:
            assert await lock.ais_held()
            r = await c.txn().if_held(lock).then(Put("x", "1")).acommit()
            assert r.succeeded
            return lock.fencing_token

    token = asyncio.run(main())
    assert token > 0 and c.get("x").value == "1"
    assert c.get_prefix("__raftkv/lock/al/") == []


def test_lost_lease_releases_the_lock_and_fences_the_old_holder(c):
    stale = c.lock("p", ttl=2)
    stale.acquire()
    stale.session._task.cancel()  # as if the holder froze: no more renewals
    start = time.monotonic()
    with c.lock("p", timeout=15) as fresh:
        waited = time.monotonic() - start
        assert fresh.fencing_token > stale.fencing_token
        fresh.put("resource", "fresh")
    assert 1.0 <= waited <= 6.0, waited
    assert not stale.is_held()
    with pytest.raises(LockNotHeld):
        stale.put("resource", "stale")
    r = c.txn().if_held(stale).then(Put("resource", "stale")).commit()
    assert not r.succeeded and c.get("resource").value == "fresh"
    stale.release()


@ray.remote(num_cpus=0)
def _locked_increments(cluster: str, n: int) -> list[tuple[int, int, int]]:
    """n read-modify-write increments, each under the lock and fenced; returns
    (fencing token, revision read at, revision written at) per increment."""
    from client import connect as conn

    out = []
    with conn(cluster, timeout=30) as cc:
        while len(out) < n:
            try:
                with cc.lock("counter", ttl=4, timeout=30) as lock:
                    r = cc.get_range("counter")
                    value = int(r.kvs[0].value)
                    w = lock.put("counter", str(value + 1))
                    out.append((lock.fencing_token, r.header.revision, w.header.revision))
            except (LockNotHeld, LockTimeout):
                continue  # lost it (e.g. lease ran out during fail-over): try again
    return out


def test_mutual_exclusion_across_leader_failover_and_replica_loss(cluster, c):
    c.put("counter", "0")
    tasks, per_task = 4, 12
    refs = [_locked_increments.remote(cluster.name, per_task) for _ in range(tasks)]
    time.sleep(1.5)
    old = cluster.leader()
    cluster.kill_replica(old)  # leader fail-over mid-run
    time.sleep(2.0)
    cluster.restart_replica(old)
    follower = next(s["replica"] for s in cluster.status() if s["role"] == "follower")
    cluster.kill_replica(follower)  # and a replica lost for the rest of the run
    results = ray.get(refs, timeout=240)
    held = sorted(x for r in results for x in r)
    # Every fenced increment landed, none was lost to a concurrent holder.
    assert int(c.get("counter").value) == tasks * per_task == len(held)
    tokens = [t for t, _, _ in held]
    assert len(set(tokens)) == len(tokens)
    # No two holders at once, judged by fencing tokens: in token order, each
    # holder read only after the previous holder's write had committed.
    for (_, _, wrote), (_, read, _) in zip(held, held[1:]):
        assert wrote <= read
    cluster.restart_replica(follower)


# -- elections ------------------------------------------------------------------------


def test_election_campaign_proclaim_resign_observe(c):
    a = c.election("e", ttl=5)
    b = c.election("e", ttl=5)
    assert a.leader() is None
    seen: list = []
    obs = a.observe()
    t = threading.Thread(target=lambda: [seen.append(v) for v in obs])
    t.start()
    a.campaign("alpha")
    assert a.is_leader() and a.leader() == "alpha"
    with pytest.raises(LockTimeout):
        b.campaign("beta", timeout=0.5)
    a.proclaim("alpha-2")
    assert b.leader() == "alpha-2"
    with pytest.raises(NotElectionLeader):
        b.proclaim("beta")
    won = threading.Event()
    tb = threading.Thread(target=lambda: (b.campaign("beta"), won.set()))
    tb.start()
    time.sleep(0.3)
    assert not won.is_set()
    a.resign()
    assert won.wait(10) and b.is_leader() and not a.is_leader()
    assert a.leader() == "beta"
    b.resign()
    assert wait_for(lambda: seen[-1:] == [None], 10)
    obs.cancel()
    t.join(10)
    tb.join(10)
    assert seen == [None, "alpha", "alpha-2", "beta", None]


@ray.remote(num_cpus=0)
class _Candidate(LeaderElected):
    def __init__(self, cluster: str, name: str) -> None:
        self.join_election(cluster, "jobs", value=name, ttl=2)

    @leader_only
    def work(self) -> str:
        return "done"

    def leading(self) -> bool:
        return self.is_leader()


def test_election_hands_over_when_the_leader_actor_is_killed(cluster, c):
    names = ["cand-0", "cand-1", "cand-2"]
    actors = {n: _Candidate.remote(cluster.name, n) for n in names}
    e = c.election("jobs")
    assert wait_for(lambda: e.leader() is not None, 20)
    first = e.leader()
    assert wait_for(lambda: ray.get(actors[first].leading.remote()), 10)
    assert ray.get(actors[first].work.remote()) == "done"
    for n in names:
        if n != first:
            with pytest.raises(Exception) as info:
                ray.get(actors[n].work.remote())
            assert "NotElectionLeader" in str(info.value)
    killed = time.monotonic()
    ray.kill(actors.pop(first))
    assert wait_for(lambda: e.leader() not in (None, first), 15)
    took = time.monotonic() - killed
    assert took <= 2 + 2.5, took  # the TTL, plus an expiry round and polling
    new = e.leader()
    assert wait_for(lambda: ray.get(actors[new].leading.remote()), 10)
    for a in actors.values():
        ray.kill(a)
