"""Review of leases, sessions, watches and recipes: findings proved without Ray.

Each test names the property it checks; a failing one is a bug report.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from client import recipes
from client.leases import Lease, Session
from client.watch import WatchHub
from kv.errors import ClientClosed, InvalidRequest, RaftKVError
from kv.leases import LeaseTable
from kv.requests import LeaseCheckpoint, LeaseExpire, LeaseGrant, LeaseKeepAlive
from kv.validation import validate
from raft_actors.leases import LeaseKeeper
from tests.test_kv_helpers import Driver
from tests.test_watch_hub import FakeClient as FakeWatchClient
from tests.helpers import take_events as take

# -- leases: a leader change never expires a lease early ------------------------------


def test_checkpoint_computed_before_a_renewal_does_not_shorten_it_for_the_next_leader():
    """The leader computes a checkpoint (100 ms left) while the holder's
    renewal is already on its way into the log ahead of it. After both apply,
    the log must not say "100 ms left" for a lease renewed a moment ago: the
    next leader starts its clock from that number and would expire the lease
    almost 10 s early, under a healthy holder that renewed in time."""
    d = Driver()
    lease = d.ok(LeaseGrant(10_000)).id
    old = LeaseKeeper(checkpoint_s=0.5)
    old.become_leader(d.sm.leases, now=0.0)
    checkpoints = [op for op in old.due(d.sm.leases, 9.9) if isinstance(op, LeaseCheckpoint)]
    assert checkpoints == [LeaseCheckpoint(((lease, 100, d.sm.leases.get(lease).epoch),))]
    d.ok(LeaseKeepAlive(lease))  # committed just ahead of the checkpoint
    old.observe(d.sm.leases, 9.9)
    for op in checkpoints:
        d.do(op)
    old.observe(d.sm.leases, 9.9)
    assert old.remaining_ms(lease, 9.9) == 10_000  # the old leader's own clock is right

    new = LeaseKeeper(checkpoint_s=0.5)
    new.become_leader(d.sm.leases, now=10.0)  # elected 0.1 s after the renewal
    # Renewed at 9.9 with a 10 s TTL: no leader may expire it before 19.9.
    assert new.remaining_ms(lease, 10.0) >= 9_900, d.sm.leases.get(lease)
    assert not [op for op in new.due(d.sm.leases, 12.0) if isinstance(op, LeaseExpire)]


def test_auto_assigned_lease_ids_stay_usable_after_a_large_explicit_id():
    """grant(id=2**63-1) is valid; afterwards every automatically assigned id
    is 2**63 or more, which no keep-alive, revoke or put can name (they must
    fit in a signed 64-bit int): the lease is granted but unusable."""
    table = LeaseTable()
    table.grant(5000, 2**63 - 1, index=1)
    auto = table.grant(5000, 0, index=2)
    validate(LeaseKeepAlive(auto.id))  # raises InvalidRequest for id >= 2**63


# -- sessions: loss is noticed on time ---------------------------------------------------


class _LoopClient:
    """Just what a Session uses: a loop thread and alease_keepalive."""

    def __init__(self, keepalive) -> None:
        self._keepalive = keepalive
        self.calls = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._closed = False

    async def alease_keepalive(self, lease_id):
        self.calls += 1
        return await self._keepalive()

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("closed")

    def stop(self) -> None:
        async def cancel_all():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _session(client: _LoopClient, ttl: float) -> Session:
    return Session(client, Lease(client, 7, ttl), time.monotonic())  # type: ignore[arg-type]


def test_session_counts_itself_lost_when_a_keepalive_hangs_past_the_ttl():
    """A keep-alive that does not come back (cluster partitioned away: the
    client's _route keeps retrying for its whole timeout, 15 s by default)
    must not keep the session "alive": once a TTL has passed since the last
    confirmed renewal, `lost` holds and on_lost callbacks run. Otherwise a
    lock holder or an elected actor (LeaderElected.is_leader) goes on
    believing it holds while the cluster has given the lease away."""

    async def hang():
        await asyncio.sleep(3600)

    client = _LoopClient(hang)
    session = _session(client, ttl=0.6)
    fired = threading.Event()
    session.on_lost(lambda s: fired.set())
    try:
        assert session.wait_lost(1.5), "still 'alive' well past its TTL"
        assert fired.is_set() and session.lost and session.remaining() == 0
    finally:
        session.close(revoke=False)
        client.stop()


def test_session_counts_itself_lost_when_its_client_is_closed():
    """A keep-alive answered ClientClosed ends the renewals: nothing renews
    the lease any more, so the session must say it is lost (now, or at the
    latest after its TTL) instead of staying 'alive' for ever."""

    async def closed():
        raise ClientClosed("the client was closed")

    client = _LoopClient(closed)
    session = _session(client, ttl=0.6)
    try:
        assert session.wait_lost(1.5), "a session whose renewals stopped never reports it"
    finally:
        session.close(revoke=False)
        client.stop()


# -- the client's loop thread: no self-deadlock ---------------------------------------------


def test_run_on_loop_from_the_clients_own_loop_raises_instead_of_deadlocking():
    """Session callbacks run on the client's loop thread. A sync recipe call
    there (lock.release(), election.resign(), lock.acquire()) waits for the
    loop it is blocking: the whole client hangs for ever. It must raise a
    typed error instead (as watch() does)."""
    client = _LoopClient(None)
    outcome: list = []

    async def nothing():
        return None

    def on_loop():
        coro = nothing()
        try:
            recipes.run_on_loop(client, coro)  # type: ignore[arg-type]
            outcome.append("returned")
        except RaftKVError as exc:
            coro.close()
            outcome.append(exc)

    client._loop.call_soon_threadsafe(on_loop)
    deadline = time.monotonic() + 2
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert outcome, "run_on_loop on the client's loop thread deadlocked"
        assert isinstance(outcome[0], InvalidRequest)
    finally:
        if outcome:
            client.stop()


# -- watches: breaking out of an iteration loses nothing -------------------------------------


@pytest.fixture
def watch_env():
    from kv.mvcc import MVCCStore

    store = MVCCStore()
    client = FakeWatchClient(store)
    hub = WatchHub(client)
    yield client, hub
    client.close(hub)


def test_breaking_out_of_a_watch_loop_and_iterating_again_misses_nothing(watch_env):
    """`for ev in w: ... break` and a later `for ev in w:` must continue with
    the next event. The events of one poll reply are popped as one response;
    breaking in the middle drops the rest of it (a gap), and the dropped
    events are never counted consumed, so progress_revision stops moving."""
    client, hub = watch_env
    revs = [client.write(lambda s, i=i: s.put(b"k", f"v{i}".encode(), 0)) for i in range(3)]
    w = hub.watch(b"k", start_revision=revs[0])
    first = None
    for ev in w:
        first = ev
        break
    assert first is not None and first.value == b"v0"
    rest = take(w, 2, timeout=1.0)
    assert [e.value for e in rest] == [b"v1", b"v2"], "events lost after a break"
    later = client.write(lambda s: s.put(b"other", b"x", 0))
    deadline = time.monotonic() + 3
    while w.progress_revision < later and time.monotonic() < deadline:
        time.sleep(0.02)
    assert w.progress_revision >= later
    w.cancel()


def test_breaking_out_of_an_async_watch_loop_misses_nothing(watch_env):
    client, hub = watch_env
    revs = [client.write(lambda s, i=i: s.put(b"ak", f"v{i}".encode(), 0)) for i in range(3)]

    async def main():
        w = await hub.awatch(b"ak", start_revision=revs[0])
        got = []
        async for ev in w:
            got.append(ev.value)
            break
        try:
            async with asyncio.timeout(1.0):
                async for ev in w:
                    got.append(ev.value)
                    if len(got) == 3:
                        break
        except TimeoutError:
            pass
        w.cancel()
        return got

    assert asyncio.run(main()) == [b"v0", b"v1", b"v2"]
