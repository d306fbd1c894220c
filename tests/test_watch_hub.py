"""client.watch (the client's hub and Watch queues) against an in-process
WatchServer over a real MVCCStore: no Ray. The fake client offers what the hub
uses: a loop thread, `_route`, `_read`, `limits`, `_closed`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest

from client import watch as watch_mod
from client.watch import WatchHub, WatchResponse
from kv.errors import ClientClosed, Compacted, InvalidRequest, Unavailable
from kv.limits import DEFAULT_LIMITS
from kv.mvcc import MVCCStore
from kv.responses import RangeResponse, ResponseHeader
from raft_actors.watch import WatchServer
from tests.helpers import take_events


class FakeClient:
    """Just enough of client.Client for the hub, serving polls from a local store."""

    name = "fake"
    limits = DEFAULT_LIMITS

    def __init__(self, store: MVCCStore, **server_kw) -> None:
        self.store = store
        self.server = WatchServer(lambda: store, **server_kw)
        self.polls: list[tuple[dict, float]] = []
        self.fail_next = 0
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("closed")

    def _read(self, op, serializable, aio=False):
        resp = RangeResponse(ResponseHeader(self.store.revision, 1), (), 0, False)
        if aio:
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(resp)
            return fut
        fut = concurrent.futures.Future()
        fut.set_result(resp)
        return fut

    async def _route(self, method, args, leader_only):
        assert method == "watch_poll" and leader_only
        watchers, wait_s = args
        self.polls.append((dict(watchers), wait_s))
        if self.fail_next:
            self.fail_next -= 1
            raise Unavailable("no leader (fake)")
        return await self.server.poll(watchers, wait_s, lambda: True)

    def write(self, fn) -> int:
        """Change the store on the loop thread (as the replica's apply does) and wake polls."""
        def run():
            fn(self.store)
            self.server.notify(self.store.revision)
            return self.store.revision

        return asyncio.run_coroutine_threadsafe(_call(run), self._loop).result()

    def close(self, hub: WatchHub | None = None) -> None:
        self._closed = True
        if hub is not None:
            hub.close()

        async def cancel_all():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(cancel_all(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)


async def _call(fn):
    return fn()


@pytest.fixture
def env():
    store = MVCCStore()
    client = FakeClient(store)
    hub = WatchHub(client)
    yield client, hub
    client.close(hub)


def take(w, n):
    return take_events(w, n, timeout=5.0)


def test_events_in_order_with_str_keys(env):
    client, hub = env
    w = hub.watch("a/", prefix=True, prev_kv=True)
    client.write(lambda s: s.put(b"a/1", b"x"))
    client.write(lambda s: s.delete_range(b"a/1"))
    evs = take(w, 2)
    assert [(e.type, e.key, e.value) for e in evs] == [("put", "a/1", b"x"), ("delete", "a/1", "")]
    assert evs[1].prev_kv.key == "a/1" and evs[1].prev_kv.value == b"x"
    assert w.progress_revision == 3
    wb = hub.watch(b"a/1", start_revision=1)
    assert [e.key for e in take(wb, 2)] == [b"a/1", b"a/1"]


def test_adding_a_watcher_does_not_wait_for_the_long_poll(env):
    client, hub = env
    hub.watch("x")
    time.sleep(0.1)  # the hub is now in a long poll for "x"
    t0 = time.monotonic()
    w = hub.watch("y", start_revision=1)  # waits for a poll that includes it, with wait_s=0
    assert time.monotonic() - t0 < 0.45  # the long poll in flight would hold it 0.5 s
    client.write(lambda s: s.put(b"y", b"1"))
    assert take(w, 1)[0].value == b"1"
    assert hub.stats["cancelled_polls"] >= 1
    assert any(wait == 0.0 and w.id in sent for sent, wait in client.polls)


def test_compacted_start_raises_from_watch_and_iteration_after_buffered_events(env):
    client, hub = env
    for i in range(5):
        client.write(lambda s: s.put(b"k", b"v"))  # 2..6
    client.write(lambda s: s.compact(4))
    with pytest.raises(Compacted) as info:
        hub.watch("k", start_revision=3)
    assert info.value.compact_revision == 4 and "watch from revision 5" in str(info.value)
    # cancel from inside a failed watch() leaves nothing behind
    time.sleep(0.05)
    assert all(w.key != b"k" or w._next >= 5 for w in hub._watches.values())


def wait_until(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def test_slow_consumer_is_paused_not_dropped_and_then_compacted(monkeypatch):
    monkeypatch.setattr(watch_mod, "MAX_BUFFERED_EVENTS", 20)
    monkeypatch.setattr(watch_mod, "RESUME_BELOW", 10)
    client = FakeClient(MVCCStore(), max_events=5)  # replies of 5 events: the buffer fills in steps
    hub = WatchHub(client)
    try:
        w = hub.watch("s")

        def put_many(n, value=None):
            def fn(s):
                for i in range(n):
                    s.put(b"s", value or str(i).encode())
            return fn

        client.write(put_many(60))  # revisions 2..61, all at once
        assert wait_until(lambda: w._paused)
        time.sleep(0.1)
        assert w._unconsumed == 25  # fetched 5 at a time until over 20, then no more polls for it
        # consuming resumes fetching: every event arrives, in order, none twice
        evs = take(w, 60)
        assert [e.value for e in evs] == [str(i).encode() for i in range(60)]
        assert [e.revision for e in evs] == list(range(2, 62))
        # a paused watcher that history was compacted past raises after its buffer
        client.write(put_many(40, b"again"))
        assert wait_until(lambda: w._paused)
        client.write(lambda s: s.compact(s.revision))
        got = []
        with pytest.raises(Compacted):
            for ev in w:
                got.append(ev)
        assert len(got) == 25 and all(e.value == b"again" for e in got)
    finally:
        client.close(hub)


def test_cancel_and_close_end_iteration(env):
    client, hub = env
    w1, w2 = hub.watch("c1"), hub.watch("c2")
    ended = []

    def consume(w):
        for _ in w:
            pass
        ended.append(w.id)

    threads = [threading.Thread(target=consume, args=(w,)) for w in (w1, w2)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    w1.cancel()
    w1.cancel()  # idempotent
    threads[0].join(2)
    assert ended == [w1.id] and w1.cancelled
    hub.close()
    threads[1].join(2)
    assert sorted(ended) == sorted([w1.id, w2.id])
    assert list(w1) == [] and list(w2.iter_responses()) == []


def test_async_iteration_and_responses_with_progress(env):
    client, hub = env

    async def main():
        w = await hub.awatch("as")
        rev = client.write(lambda s: s.put(b"as", b"1"))
        async for ev in w:
            assert ev.revision == rev
            break
        # an idle watcher gets progress responses
        other = client.write(lambda s: s.put(b"zz", b"1"))
        async for resp in w.aiter_responses():
            assert isinstance(resp, WatchResponse)
            if resp.revision >= other:
                assert resp.events == ()
                break
        assert w.progress_revision >= other
        w.cancel()
        async for _ in w:
            raise AssertionError("a cancelled watch yields nothing")
        return True

    assert asyncio.run(asyncio.wait_for(main(), 10))


def test_awatch_on_the_clients_own_loop(env):
    client, hub = env

    async def on_loop():
        w = await hub.awatch("own", start_revision=1)
        async for ev in w:
            w.cancel()
            return ev.value

    client.write(lambda s: s.put(b"own", b"v"))
    fut = asyncio.run_coroutine_threadsafe(on_loop(), client._loop)
    assert fut.result(5) == b"v"
    with pytest.raises(InvalidRequest):
        asyncio.run_coroutine_threadsafe(_call(lambda: hub.watch("x")), client._loop).result(5)


def test_poll_failure_fails_starting_watchers_and_keeps_running_ones(env):
    client, hub = env
    running = hub.watch("r")
    time.sleep(0.05)
    client.fail_next = 1
    with pytest.raises(Unavailable):
        hub.watch("new", start_revision=1)
    client.write(lambda s: s.put(b"r", b"1"))
    assert take(running, 1)[0].value == b"1"
    assert hub.stats["errors"] == 1


def test_bad_arguments():
    store = MVCCStore()
    client = FakeClient(store)
    hub = WatchHub(client)
    try:
        for kwargs in [dict(key=""), dict(key=3), dict(key="a", filters=("noget",)), dict(key="a", filters="noput"),
                       dict(key="a", prev_kv=1), dict(key="a", start_revision=-1), dict(key="a", start_revision="1"),
                       dict(key="a", prefix=True, range_end="b")]:
            key = kwargs.pop("key")
            with pytest.raises(InvalidRequest):
                hub.watch(key, **kwargs)
    finally:
        client.close(hub)
    with pytest.raises(ClientClosed):
        hub.watch("a")
