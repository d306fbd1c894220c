"""raft_actors.watch (the leader's side of watches) and the MVCC changelog,
without Ray: a real MVCCStore, a fake "serving" flag, asyncio in-process."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kv.errors import Compacted, InvalidRequest
from kv.mvcc import MVCCStore
from kv.responses import KeyValue
from raft_actors.watch import WatchBatch, WatchServer, parse_watcher

ALL = (b"\0", b"\0")


def server_for(store: MVCCStore, **kw) -> WatchServer:
    return WatchServer(lambda: store, **kw)


def spec(key=b"a", end=None, nxt=1, prev=False, filters=()):
    return parse_watcher((key, end, nxt, prev, tuple(filters)))


def revs(events):
    return [e.revision for e in events]


# --- Event convenience properties ---------------------------------------------

def test_event_reads_like_an_etcd_event():
    s = MVCCStore()
    s.put(b"k", b"v", lease=7)  # 2
    s.delete_range(b"k")  # 3
    put, delete = s.changes_since(1, b"k")
    assert (put.type, put.key, put.value, put.mod_revision, put.create_revision, put.version, put.lease) == (
        "put", b"k", b"v", 2, 2, 1, 7)
    assert (delete.type, delete.key, delete.value, delete.mod_revision, delete.version) == ("delete", b"k", b"", 3, 0)
    assert delete.prev_kv == KeyValue(b"k", b"v", 2, 2, 1, 7)


# --- collect: ordering, cutting, errors, filters, prev_kv ------------------------

def test_collect_lists_whole_history_in_order_with_bookmarks():
    s = MVCCStore()
    s.put(b"a", b"1")  # 2
    s.put(b"b", b"1")  # 3
    s.begin()  # 4: b then a
    s.put(b"b", b"2")
    s.put(b"a", b"2")
    s.end()
    ws = server_for(s)
    batch = ws.collect({1: spec(b"a", b"c"), 2: spec(b"a"), 3: spec(b"z", nxt=3)})
    assert batch.revision == 4 and batch.ready and not batch.more
    events, nxt = batch.results[1]
    assert [(e.revision, e.key) for e in events] == [(2, b"a"), (3, b"b"), (4, b"b"), (4, b"a")]
    assert nxt == 5
    assert revs(batch.results[2][0]) == [2, 4]
    assert batch.results[3] == ((), 5)  # nothing for it, but its bookmark moves
    # a watcher ahead of the store (a new leader not caught up) keeps its place
    assert ws.collect({1: spec(nxt=9)}).results[1] == ((), 9)


def test_reply_is_cut_only_between_revisions():
    s = MVCCStore()
    for r in range(10):  # revisions 2..11, three keys each
        s.begin()
        for k in (b"a", b"b", b"c"):
            s.put(k, str(r).encode())
        s.end()
    ws = server_for(s, max_events=4)
    batch = ws.collect({1: spec(*ALL)})
    events, nxt = batch.results[1]
    assert revs(events) == [2, 2, 2, 3, 3, 3]  # 4 events asked, the second revision goes whole
    assert nxt == 4 and batch.more == {1}
    # the next poll continues exactly there
    batch = ws.collect({1: spec(*ALL, nxt=nxt)})
    assert revs(batch.results[1][0])[:3] == [4, 4, 4]
    # one revision larger than the bound still goes whole, never split
    tiny = server_for(s, max_events=1)
    assert revs(tiny.collect({1: spec(*ALL)}).results[1][0]) == [2, 2, 2]
    # the byte bound works the same way
    s.put(b"big", b"x" * 5000)
    s.put(b"big", b"y" * 5000)
    small = server_for(s, max_bytes=4000)
    events, nxt = small.collect({1: spec(b"big")}).results[1]
    assert revs(events) == [12] and nxt == 13


def test_budget_is_shared_and_every_watcher_gets_its_turn():
    s = MVCCStore()
    for i in range(20):
        s.put(b"k", str(i).encode())  # 2..21
    ws = server_for(s, max_events=5)
    batch = ws.collect({1: spec(b"k"), 2: spec(b"k")})
    assert len(batch.results[1][0]) == 5
    assert batch.results[2] == ((), 2) and batch.more == {1, 2}  # cut before anything: keeps its place
    batch = ws.collect({2: spec(b"k"), 1: spec(b"k", nxt=7)})  # the hub rotates the order
    assert revs(batch.results[2][0]) == [2, 3, 4, 5, 6]


def test_compacted_start_is_an_error_for_that_watcher_only():
    s = MVCCStore()
    for i in range(5):
        s.put(b"a", str(i).encode())  # 2..6
    s.compact(4)
    batch = server_for(s).collect({1: spec(b"a", nxt=3), 2: spec(b"a", nxt=5), 3: spec(b"a", b"b", nxt=4)})
    err = batch.results[1]
    assert isinstance(err, Compacted) and err.compact_revision == 4
    assert "compacted at revision 4" in str(err) and "watch from revision 5" in str(err)
    assert isinstance(batch.results[3], Compacted)
    assert revs(batch.results[2][0]) == [5, 6]
    assert batch.ready


def test_filters_and_prev_kv():
    s = MVCCStore()
    s.put(b"a", b"1")  # 2
    s.put(b"a", b"2")  # 3
    s.delete_range(b"a")  # 4
    s.put(b"a", b"3")  # 5
    ws = server_for(s)
    b = ws.collect({1: spec(b"a", filters=["noput"]), 2: spec(b"a", filters=["nodelete"]),
                    3: spec(b"a", prev=True), 4: spec(b"a", filters=["noput", "nodelete"])})
    assert [(e.type, e.revision) for e in b.results[1][0]] == [("delete", 4)]
    assert [(e.type, e.revision) for e in b.results[2][0]] == [("put", 2), ("put", 3), ("put", 5)]
    assert all(e.prev_kv is None for e in b.results[2][0])  # prev_kv only when asked
    prevs = [e.prev_kv for e in b.results[3][0]]
    assert prevs == [None, KeyValue(b"a", b"1", 2, 2, 1, 0), KeyValue(b"a", b"2", 2, 3, 2, 0), None]
    assert b.results[4] == ((), 6)  # everything filtered: still moves on


def test_malformed_watchers_get_invalid_request():
    for bad in [(b"", None, 1, False, ()), ("str", None, 1, False, ()), (b"a", None, 0, False, ()),
                (b"a", None, 1, "yes", ()), (b"a", None, 1, False, ("noget",)), (b"a",), None]:
        assert isinstance(parse_watcher(bad), InvalidRequest), bad
    s = MVCCStore()
    b = server_for(s).collect({1: parse_watcher(None), 2: spec()})
    assert isinstance(b.results[1], InvalidRequest) and b.results[2] == ((), 2)


def test_scan_bound_cuts_filtered_history_at_a_revision():
    s = MVCCStore()
    for i in range(30):
        s.put(b"k", b"v")  # 2..31
    ws = server_for(s, max_scan=10)
    b = ws.collect({1: spec(b"k", filters=["noput"])})
    assert b.results[1] == ((), 12) and b.more == {1} and not b.ready


# --- poll: waiting, waking, leadership -----------------------------------------

def test_poll_answers_at_once_when_there_is_something():
    s = MVCCStore()
    s.put(b"a", b"1")

    async def main():
        return await server_for(s).poll({1: (b"a", None, 1, False, ())}, 5.0, lambda: True)

    batch = asyncio.run(main())
    assert isinstance(batch, WatchBatch) and revs(batch.results[1][0]) == [2]


def test_poll_waits_for_notify_and_skips_filtered_changes_meanwhile():
    s = MVCCStore()
    ws = server_for(s)

    async def main():
        poll = asyncio.ensure_future(ws.poll({1: (b"a", None, 2, False, ("noput",))}, 5.0, lambda: True))
        await asyncio.sleep(0.05)
        assert not poll.done() and ws.stats["waiting"] == 1
        s.put(b"a", b"1")  # 2: filtered out, the poll goes on waiting
        ws.notify(s.revision)
        await asyncio.sleep(0.05)
        assert not poll.done()
        s.delete_range(b"a")  # 3
        ws.notify(s.revision)
        return await asyncio.wait_for(poll, 1.0)

    batch = asyncio.run(main())
    events, nxt = batch.results[1]
    assert [(e.type, e.revision) for e in events] == [("delete", 3)] and nxt == 4


def test_poll_times_out_with_bookmarks_only():
    s = MVCCStore()
    s.put(b"other", b"1")
    ws = server_for(s)

    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        batch = await ws.poll({1: (b"a", None, 1, False, ())}, 0.1, lambda: True)
        return batch, loop.time() - t0

    batch, took = asyncio.run(main())
    assert 0.08 <= took < 1.0
    assert batch.results[1] == ((), 3) and not batch.ready


def test_poll_returns_none_when_leadership_is_lost_while_waiting():
    s = MVCCStore()
    ws = server_for(s)
    leading = [True]

    async def main():
        poll = asyncio.ensure_future(ws.poll({1: (b"a", None, 2, False, ())}, 5.0, lambda: leading[0]))
        await asyncio.sleep(0.02)
        leading[0] = False
        ws.wake()
        return await asyncio.wait_for(poll, 1.0)

    assert asyncio.run(main()) is None
    assert asyncio.run(ws.poll({}, 0, lambda: False)) is None


def test_notify_without_a_new_revision_does_not_wake():
    s = MVCCStore()
    ws = server_for(s)

    async def main():
        poll = asyncio.ensure_future(ws.poll({1: (b"a", None, 2, False, ())}, 0.2, lambda: True))
        await asyncio.sleep(0.02)
        ws.notify(s.revision)
        ws.notify(s.revision)
        return await poll

    assert asyncio.run(main()).results[1] == ((), 2)


# --- the MVCC changelog ----------------------------------------------------------

def test_changelog_serves_recent_starts_and_falls_back_for_old_ones():
    s = MVCCStore(changelog_size=10)
    for i in range(30):
        s.put(b"k%02d" % (i % 7), str(i).encode())  # 2..31
    assert s._log_start > 2  # older changes were trimmed
    for start in range(1, 33):
        assert s.changes_since(start, *ALL) == s.changes_since(start, *ALL, scan=True), start
    # whole revisions only: a group bigger than the changelog leaves it empty, not split
    s.begin()
    for i in range(15):
        s.put(b"g%02d" % i, b"x")
    s.end()
    assert s._log_start == s.revision + 1
    assert len(s.changes_since(s.revision, *ALL)) == 15


def test_changelog_is_not_state():
    a, b = MVCCStore(), MVCCStore(changelog_size=0)
    for store in (a, b):
        store.put(b"x", b"1")
        store.begin()
        store.put(b"y", b"2")
        store.delete_range(b"x")
        store.end()
        store.compact(2)
    assert a.to_plain() == b.to_plain()
    restored = MVCCStore.from_plain(a.to_plain())
    assert restored._log_start == restored.revision + 1
    assert restored.changes_since(3, *ALL) == a.changes_since(3, *ALL)
    restored.put(b"z", b"3")
    assert restored.changes_since(3, *ALL) == restored.changes_since(3, *ALL, scan=True)


def test_compaction_trims_the_changelog():
    s = MVCCStore()
    for i in range(10):
        s.put(b"a", str(i).encode())  # 2..11
    s.compact(8)
    assert s._log_start == 9 and all(rev > 8 for rev, _, _ in s._log[s._log_head:])
    assert revs(s.changes_since(9, *ALL)) == [9, 10, 11]
    with pytest.raises(Compacted):
        s.changes_since(8, *ALL)


_keys = st.sampled_from([b"a", b"ab", b"b", b"ba", b"c", b"d\xff"])
_op = st.one_of(
    st.tuples(st.just("put"), _keys, st.binary(max_size=3)),
    st.tuples(st.just("del"), _keys, st.sampled_from([None, b"\0", b"b", b"c", b"e"])),
    st.tuples(st.just("txn"), st.lists(_keys, max_size=4, unique=True), st.booleans()),
    st.tuples(st.just("compact"), st.integers(0, 5), st.none()),
)


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(_op, max_size=60), size=st.integers(0, 12),
       ranges=st.lists(st.tuples(_keys, st.sampled_from([None, b"\0", b"b", b"c", b"zz"])), min_size=1, max_size=4))
def test_changelog_path_equals_full_scan(ops, size, ranges):
    s = MVCCStore(changelog_size=size)
    for kind, x, y in ops:
        if kind == "put":
            s.put(x, y)
        elif kind == "del":
            s.delete_range(x, y)
        elif kind == "txn":
            s.begin()
            for k in x:
                if y and s.get_record(k) is not None:
                    s.delete_range(k)
                else:
                    s.put(k, b"t")
            s.end()
        elif s.revision > s.compact_revision + x:
            s.compact(s.revision - x)
    for start in range(s.compact_revision + 1, s.revision + 2):
        for key, end in ranges:
            for prev in (True, False):
                fast = s.changes_since(start, key, end, prev_kv=prev)
                assert fast == s.changes_since(start, key, end, prev_kv=prev, scan=True), (start, key, end)
    # and the server's cut replies, chained, give the same events as one full scan
    if s.revision > s.compact_revision:
        ws = server_for(s, max_events=2)
        start = s.compact_revision + 1
        got, nxt = [], start
        for _ in range(1000):
            events, new = ws.collect({1: spec(*ALL, nxt=nxt, prev=True)}).results[1]
            assert new > nxt or new == s.revision + 1
            got.extend(events)
            if new == nxt or new == s.revision + 1:
                nxt = new
                break
            nxt = new
        assert nxt == s.revision + 1
        assert got == s.changes_since(start, *ALL, scan=True)
