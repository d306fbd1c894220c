"""Watches on a real local Ray instance: events, ranges, replay, compaction,
cancel, async iteration, one poll stream per client, fail-over, bookmarks.

One Ray instance serves the whole session (tests/conftest.py); most tests
share one cluster (each under its own key prefix), the fail-over test makes
its own.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from client import Compacted, connect
from client.watch import WatchResponse
from raft_actors import start_cluster

from tests.helpers import take_events as take, wait_for

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def shared(ray_session, tmp_path_factory):
    name = f"watch-{time.monotonic_ns() % 10**9}"
    cluster = start_cluster(name, 3, data_dir=str(tmp_path_factory.mktemp(name)))
    yield cluster
    cluster.stop()


@pytest.fixture
def c(shared):
    client = connect(shared.name, timeout=20)
    yield client
    client.close()


def test_put_and_delete_events(c):
    w = c.watch("basic")
    r1 = c.put("basic", "v1").header.revision  # acknowledged after watch() returned: delivered
    r2 = c.put("basic", "v2").header.revision
    c.put("basic-not", "x")
    c.delete("basic")
    evs = take(w, 3)
    assert [(e.type, e.key, e.value) for e in evs] == [("put", "basic", "v1"), ("put", "basic", "v2"),
                                                       ("delete", "basic", "")]
    assert [e.mod_revision for e in evs[:2]] == [r1, r2] and evs[2].revision > r2
    assert (evs[1].create_revision, evs[1].version, evs[1].lease, evs[1].prev_kv) == (r1, 2, 0, None)
    assert w.progress_revision >= evs[2].revision
    w.cancel()
    wb = c.watch(b"basic", prev_kv=True)
    c.put(b"basic", b"\x00\xff")
    (ev,) = take(wb, 1)
    assert ev.key == b"basic" and ev.value == b"\x00\xff" and ev.prev_kv is None
    c.put(b"basic", b"again")
    (ev,) = take(wb, 1)
    assert ev.prev_kv.value == b"\x00\xff" and ev.kv.version == 2


def test_prefix_range_filters_and_prev_kv(c):
    wp = c.watch("pre/", prefix=True)
    wr = c.watch("pre/b", range_end="pre/d", prev_kv=True, filters=("noput",))
    for k in ("pre/a", "pre/b", "pre/c", "pre/d", "prefix-not"):
        c.put(k, k.upper())
    c.delete("pre/", prefix=True)
    got = take(wp, 8)
    assert [(e.type, e.key) for e in got] == [("put", "pre/a"), ("put", "pre/b"), ("put", "pre/c"), ("put", "pre/d"),
                                             ("delete", "pre/a"), ("delete", "pre/b"), ("delete", "pre/c"),
                                             ("delete", "pre/d")]
    assert len({e.revision for e in got[4:]}) == 1  # one delete, one revision: delivered together
    dels = take(wr, 2)
    assert [(e.type, e.key, e.prev_kv.value) for e in dels] == [("delete", "pre/b", "PRE/B"),
                                                                 ("delete", "pre/c", "PRE/C")]


def test_start_revision_replays_history_then_goes_live(c):
    first = c.put("replay", "0").header.revision
    for i in range(1, 5):
        c.put("replay", str(i))
    w = c.watch("replay", start_revision=first + 2)
    c.put("replay", "5")
    evs = take(w, 4)
    assert [e.value for e in evs] == ["2", "3", "4", "5"]
    assert [e.revision for e in evs] == list(range(first + 2, first + 6))


def test_compacted_start_raises_compacted(c):
    r1 = c.put("cw", "1").header.revision
    r2 = c.put("cw", "2").header.revision
    c.compact(r2)
    with pytest.raises(Compacted) as info:
        c.watch("cw", start_revision=r1)
    assert info.value.compact_revision == r2
    assert f"compacted at revision {r2}" in str(info.value) and f"watch from revision {r2 + 1}" in str(info.value)
    w = c.watch("cw", start_revision=r2 + 1)  # the oldest revision one can watch from
    c.put("cw", "3")
    assert [e.value for e in take(w, 1)] == ["3"]


def test_cancel_ends_iteration_and_close_cancels_every_watch(shared, c):
    w = c.watch("cancel/k")
    done = threading.Event()
    threading.Thread(target=lambda: (list(w), done.set()), daemon=True).start()
    time.sleep(0.1)
    w.cancel()
    assert done.wait(5)
    w.cancel()  # idempotent
    assert list(w) == []
    other = connect(shared.name)
    ws = [other.watch(f"cancel/{i}") for i in range(3)]
    ended = []
    threads = [threading.Thread(target=lambda w=w: (list(w), ended.append(w.id))) for w in ws]
    for t in threads:
        t.start()
    other.close()
    for t in threads:
        t.join(5)
    assert sorted(ended) == sorted(w.id for w in ws) and all(w.cancelled for w in ws)


def test_async_iteration(c):
    async def main():
        w = await c.awatch("aw/", prefix=True)
        r = await c.aput("aw/1", "a")
        await c.adelete("aw/1")
        got = []
        async for ev in w:
            got.append(ev)
            if len(got) == 2:
                break
        replay = await c.awatch("aw/1", start_revision=r.header.revision)
        responses = []
        async for resp in replay.aiter_responses():
            responses.append(resp)
            if sum(len(x.events) for x in responses) == 2:
                break
        w.cancel()
        replay.cancel()
        async for _ in w:
            raise AssertionError("a cancelled watch yields nothing")
        return got, responses

    got, responses = asyncio.run(asyncio.wait_for(main(), 20))
    assert [(e.type, e.key, e.value) for e in got] == [("put", "aw/1", "a"), ("delete", "aw/1", "")]
    assert all(isinstance(r, WatchResponse) for r in responses)
    assert [e.revision for r in responses for e in r.events] == [got[0].revision, got[1].revision]


def test_many_watchers_share_one_poll_stream(c):
    watches = [c.watch(f"many/{i % 5}") for i in range(40)] + [c.watch("many/", prefix=True)]
    hub = c._watch_hub()
    time.sleep(0.2)
    polls_before = hub.stats["polls"]
    writes = 30
    for i in range(writes):
        c.put(f"many/{i % 5}", str(i))
    for i, w in enumerate(watches[:40]):
        assert [e.value for e in take(w, 6)] == [str(j) for j in range(i % 5, writes, 5)]
    assert len(take(watches[40], writes)) == writes
    polls = hub.stats["polls"] - polls_before
    # 41 watchers x 30 writes = 1230 deliveries; one poll stream carried them all
    assert polls <= 2 * writes + 5, hub.stats
    assert hub.stats["events"] >= 40 * 6 + writes


def test_progress_revision_advances_while_idle(c):
    w = c.watch("idle/key")
    start = w.progress_revision
    rev = c.put("idle/elsewhere", "x").header.revision
    assert rev > start
    assert wait_for(lambda: w.progress_revision >= rev, 5)  # nobody iterates, no event for it
    resp = next(w.iter_responses())
    assert resp.events == () and resp.revision >= rev
    # resuming from the bookmark misses nothing and repeats nothing
    c.put("idle/key", "after")
    resumed = c.watch("idle/key", start_revision=w.progress_revision + 1)
    assert [e.value for e in take(resumed, 1)] == ["after"]


def test_failover_delivers_every_revision_once_in_order(make_cluster):
    cluster = make_cluster(3)
    c = connect(cluster.name, timeout=30)
    try:
        w = c.watch("fo/", prefix=True)
        start = w.progress_revision
        events: list = []
        collector = threading.Thread(target=lambda: events.extend(w), daemon=True)
        collector.start()
        stop = threading.Event()
        acked: list[int] = []

        def writer():
            i = 0
            while not stop.is_set():
                try:
                    acked.append(c.put(f"fo/{i}", str(i)).header.revision)
                except Exception:  # an unknown outcome is allowed; the events tell
                    pass
                i += 1

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.6)
        old = cluster.leader()
        cluster.kill_replica(old)
        time.sleep(1.0)
        assert cluster.leader() != old  # the watch's poll stream had to move
        cluster.restart_replica(old)
        time.sleep(0.5)
        stop.set()
        t.join(30)
        final = c.put("fo/final", "end").header.revision
        assert wait_for(lambda: w.progress_revision >= final, 20), (w.progress_revision, final)
        w.cancel()
        collector.join(5)
        revs = [e.revision for e in events]
        # Only this test writes: every revision after the start is one put
        # under fo/, so the events must be exactly start+1..final, in order.
        assert revs == list(range(start + 1, final + 1)), (len(revs), final - start)
        assert set(acked) <= set(revs) and len(acked) > 20
        # and they are the events history replays
        replay = c.watch("fo/", start_revision=start + 1, prefix=True)
        again = take(replay, len(events), timeout=20)
        assert [(e.revision, e.key, e.value) for e in again] == [(e.revision, e.key, e.value) for e in events]
    finally:
        c.close()
