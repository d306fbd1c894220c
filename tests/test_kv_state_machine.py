"""kv.state_machine: etcd semantics through apply(), batches, snapshots, determinism."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kv.codec import encode
from kv.errors import (
    CodecError,
    Compacted,
    FutureRevision,
    InvalidRequest,
    KeyNotFound,
    RaftKVError,
    RequestTooLarge,
)
from kv.limits import Limits
from kv.requests import (
    Compact,
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
    prefix_end,
)
from kv.responses import (
    RESPONSE_TYPES,
    CompactResponse,
    DeleteRangeResponse,
    KeyValue,
    PutResponse,
    RangeResponse,
    ResponseHeader,
    TxnResponse,
    result_to_plain,
)
from kv.state_machine import Command, KVStateMachine, decode_batch, encode_batch

from tests.test_kv_helpers import Driver

ALL = Range(b"\0", b"\0")


def keys(resp):
    return [kv.key for kv in resp.kvs]


def values(resp):
    return [kv.value for kv in resp.kvs]


# --- apply() mechanics --------------------------------------------------------------


def test_empty_store_and_first_put():
    d = Driver(term=7)
    assert d.sm.revision == 1 and d.sm.applied_index == 0
    assert d.sm.read(ALL, 7) == RangeResponse(ResponseHeader(1, 7), (), 0, False)
    r = d.do(Put("a", "1"))
    assert r == PutResponse(ResponseHeader(2, 7), None)
    assert d.sm.read(Range("a"), 8).kvs == (KeyValue("a", "1", 2, 2, 1, 0),)


def test_noop_entry_and_replayed_index():
    sm = KVStateMachine()
    assert sm.apply(1, 1, b"") == []
    assert sm.applied_index == 1 and sm.applied_term == 1
    data = encode_batch([Command("", 0, 0, Put(b"a", b"1"))], 5.0)
    assert len(sm.apply(2, 1, data)) == 1
    assert sm.apply(2, 1, data) == []  # same index again: ignored
    assert sm.apply(1, 1, data) == []
    assert sm.revision == 2 and sm.applied_index == 2
    assert len(sm.apply(5, 2, data)) == 1  # a gap (e.g. conf-change entries) is allowed
    assert sm.applied_index == 5 and sm.applied_term == 2 and sm.revision == 3


def test_every_header_has_revision_after_apply_and_the_entry_term():
    d = Driver()
    d.term = 4
    results = d.apply(
        Command("", 0, 0, Put(b"a", b"1")),
        Command("", 0, 0, Range(b"a")),
        Command("", 0, 0, Put(b"b", b"1")),
        Command("", 0, 0, DeleteRange(b"zz")),
        Command("", 0, 0, Txn((), (Put(b"c", b"1"), Range(b"a")))),
        Command("", 0, 0, Compact(2)),
    )
    assert [r.header for r in results] == [
        ResponseHeader(2, 4),
        ResponseHeader(2, 4),
        ResponseHeader(3, 4),
        ResponseHeader(3, 4),
        ResponseHeader(4, 4),
        ResponseHeader(4, 4),
    ]
    assert [r.header for r in results[4].responses] == [ResponseHeader(4, 4)] * 2
    d.term = 5
    assert d.do(Range(b"a")).header == ResponseHeader(4, 5)


def test_bad_batch_and_bad_commands():
    sm = KVStateMachine()
    (err,) = sm.apply(1, 1, b"\x07garbage")
    assert isinstance(err, CodecError) and sm.applied_index == 1
    (err,) = sm.apply(2, 1, encode_batch([Command("", 0, 0, Put(b"a", b"1"))], 1.0)[:-1])
    assert isinstance(err, CodecError)
    assert sm.revision == 1
    # a command whose op is garbage fails alone; its neighbours apply
    good = encode_batch([Command("", 0, 0, Put(b"a", b"1"))], 1.0)
    head = good[:13]
    cmd = good[13:]
    bad_op = encode([99, b"x"])
    bad_cmd = cmd[:16] + len(bad_op).to_bytes(4, "little") + cmd[20:22] + bad_op
    data = head[:9] + (3).to_bytes(4, "little") + cmd + bad_cmd + cmd
    results = sm.apply(3, 1, data)
    assert isinstance(results[0], PutResponse)
    assert isinstance(results[1], InvalidRequest) and "unknown request tag 99" in str(results[1])
    assert isinstance(results[2], PutResponse)
    assert sm.revision == 3


def test_invalid_requests_come_back_as_error_instances():
    d = Driver(Limits(max_request_bytes=100, max_txn_ops=2))
    results = d.apply(
        Command("", 0, 0, Put(b"", b"v")),
        Command("", 0, 0, Put(b"k", b"x" * 200)),
        Command("", 0, 0, Txn((), (Put(b"a", b"1"), Put(b"b", b"1"), Put(b"c", b"1")))),
        Command("", 0, 0, Txn((), (Put(b"a", b"1"), Put(b"a", b"2")))),
        Command("", 0, 0, Range(b"a", sort_order="sideways")),  # type: ignore[arg-type]
        Command("", 0, 0, Put(b"ok", b"1")),
    )
    assert [type(r) for r in results] == [
        InvalidRequest,
        RequestTooLarge,
        RequestTooLarge,
        InvalidRequest,
        InvalidRequest,
        PutResponse,
    ]
    assert "duplicate key given in txn request" in str(results[3])
    assert all(r.__traceback__ is None for r in results[:5])
    assert d.sm.revision == 2


def test_encode_decode_batch():
    cmds = [
        Command("client-é", 1, 1, Put("k", b"v")),
        Command("", 0, 0, Txn((Compare("k", "value", "==", "v"),), (DeleteRange("k"),))),
        Command("x", 2**62, 2**62, Compact(3)),
    ]
    now, back = decode_batch(encode_batch(cmds, 12.5))
    assert now == 12.5 and back == cmds
    with pytest.raises(InvalidRequest):
        encode_batch(cmds, float("nan"))
    with pytest.raises(InvalidRequest):
        encode_batch([Command(3, 1, 1, Put(b"k", b"v"))], 1.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        encode_batch([Command("c", 2**64, 1, Put(b"k", b"v"))], 1.0)
    with pytest.raises(InvalidRequest):
        encode_batch([Command("c", 1, 1, "put")], 1.0)  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        decode_batch(b"\x01")
    with pytest.raises(CodecError):
        decode_batch(encode_batch(cmds, 1.0) + b"x")


# --- put / range ----------------------------------------------------------------------


@pytest.fixture
def filled():
    d = Driver()
    d.ok(LeaseGrant(60_000, 8))  # leases take no revision
    d.ok(LeaseGrant(60_000, 3))
    d.ok(Put(b"a", b"3"))  # 2
    d.ok(Put(b"b", b"1"))  # 3
    d.ok(Put(b"c", b"2"))  # 4
    d.ok(Put(b"b", b"0"))  # 5: b version 2
    d.ok(Put(b"ab", b"9", lease=8))  # 6
    d.ok(Put(b"\xff\xfe", b"z"))  # 7: not utf-8
    return d


def test_range_forms(filled):
    sm = filled.sm
    assert keys(sm.read(ALL, 1)) == [b"a", b"ab", b"b", b"c", b"\xff\xfe"]
    assert keys(sm.read(Range(b"a"), 1)) == [b"a"]
    assert keys(sm.read(Range(b"a", prefix_end(b"a")), 1)) == [b"a", b"ab"]
    assert keys(sm.read(Range(b"ab", b"c"), 1)) == [b"ab", b"b"]
    assert keys(sm.read(Range(b"b", b"\0"), 1)) == [b"b", b"c", b"\xff\xfe"]
    assert keys(sm.read(Range(b"b", b"a"), 1)) == []
    assert keys(sm.read(Range(b"q"), 1)) == []


def test_key_and_value_types(filled):
    sm = filled.sm
    filled.ok(Put("s", "text"))
    assert sm.read(Range("s"), 1).kvs[0] == KeyValue("s", "text", 8, 8, 1, 0)
    assert sm.read(Range(b"s"), 1).kvs[0].key == b"s"
    # a str request gets str keys, except keys that are not utf-8
    assert keys(sm.read(Range("\0", "\0"), 1)) == ["a", "ab", "b", "c", "s", b"\xff\xfe"]
    assert values(sm.read(Range("\0", "\0"), 1)) == [b"3", b"9", b"0", b"2", "text", b"z"]
    assert sm.read(Range("é"), 1).kvs == ()
    filled.ok(Put("é", b"accent"))
    assert sm.read(Range("é".encode()), 1).kvs[0].key == "é".encode()


def test_limit_count_more(filled):
    r = filled.sm.read(Range(b"\0", b"\0", limit=2), 1)
    assert keys(r) == [b"a", b"ab"] and r.count == 5 and r.more is True
    r = filled.sm.read(Range(b"\0", b"\0", limit=5), 1)
    assert r.count == 5 and r.more is False
    r = filled.sm.read(Range(b"\0", b"\0", count_only=True), 1)
    assert r.kvs == () and r.count == 5 and r.more is False
    r = filled.sm.read(Range(b"\0", b"\0", keys_only=True, limit=1), 1)
    assert r.kvs == (KeyValue(b"a", b"", 2, 2, 1, 0),)


@pytest.mark.parametrize(
    "order,target,expected",
    [
        ("none", "key", [b"a", b"ab", b"b", b"c", b"\xff\xfe"]),
        ("ascend", "key", [b"a", b"ab", b"b", b"c", b"\xff\xfe"]),
        ("descend", "key", [b"\xff\xfe", b"c", b"b", b"ab", b"a"]),
        ("ascend", "value", [b"b", b"c", b"a", b"ab", b"\xff\xfe"]),  # values 0 2 3 9 z
        ("none", "value", [b"b", b"c", b"a", b"ab", b"\xff\xfe"]),  # a target implies ascend
        ("descend", "value", [b"\xff\xfe", b"ab", b"a", b"c", b"b"]),
        ("ascend", "create", [b"a", b"b", b"c", b"ab", b"\xff\xfe"]),
        ("descend", "create", [b"\xff\xfe", b"ab", b"c", b"b", b"a"]),
        ("ascend", "mod", [b"a", b"c", b"b", b"ab", b"\xff\xfe"]),
        ("descend", "mod", [b"\xff\xfe", b"ab", b"b", b"c", b"a"]),
        ("ascend", "version", [b"a", b"ab", b"c", b"\xff\xfe", b"b"]),  # ties keep key order
        ("descend", "version", [b"b", b"a", b"ab", b"c", b"\xff\xfe"]),
    ],
)
def test_sort(filled, order, target, expected):
    r = filled.sm.read(Range(b"\0", b"\0", sort_order=order, sort_target=target), 1)
    assert keys(r) == expected


def test_sort_applies_before_limit(filled):
    r = filled.sm.read(Range(b"\0", b"\0", sort_order="descend", limit=2), 1)
    assert keys(r) == [b"\xff\xfe", b"c"] and r.more and r.count == 5


def test_reads_at_revisions(filled):
    sm = filled.sm
    assert values(sm.read(Range(b"b", revision=3), 1)) == [b"1"]
    assert values(sm.read(Range(b"b", revision=4), 1)) == [b"1"]
    assert values(sm.read(Range(b"b", revision=5), 1)) == [b"0"]
    assert keys(sm.read(Range(b"\0", b"\0", revision=3), 1)) == [b"a", b"b"]
    assert sm.read(Range(b"\0", b"\0", revision=3), 1).header.revision == 7  # header: current
    with pytest.raises(FutureRevision):
        sm.read(Range(b"a", revision=8), 1)
    assert isinstance(filled.do(Range(b"a", revision=8)), FutureRevision)


def test_put_prev_kv_lease_and_ignore_flags(filled):
    r = filled.ok(Put(b"ab", b"10", prev_kv=True))
    assert r.prev_kv == KeyValue(b"ab", b"9", 6, 6, 1, 8)
    assert filled.ok(Put(b"new", b"1", prev_kv=True)).prev_kv is None
    filled.ok(Put(b"ab", b"", lease=3, ignore_value=True))
    assert filled.sm.read(Range(b"ab"), 1).kvs[0] == KeyValue(b"ab", b"10", 6, 10, 3, 3)
    filled.ok(Put(b"ab", "11", ignore_lease=True))
    assert filled.sm.read(Range(b"ab"), 1).kvs[0] == KeyValue(b"ab", "11", 6, 11, 4, 3)
    rev = filled.sm.revision
    assert isinstance(filled.do(Put(b"nope", b"", ignore_value=True)), KeyNotFound)
    assert isinstance(filled.do(Put(b"nope", b"x", ignore_lease=True)), KeyNotFound)
    assert filled.sm.revision == rev


# --- delete -------------------------------------------------------------------------


def test_delete_with_prev_kv(filled):
    r = filled.ok(DeleteRange(b"a", prefix_end(b"a"), prev_kv=True))
    assert r == DeleteRangeResponse(
        ResponseHeader(8, 1), 2, (KeyValue(b"a", b"3", 2, 2, 1, 0), KeyValue(b"ab", b"9", 6, 6, 1, 8))
    )
    assert keys(filled.sm.read(ALL, 1)) == [b"b", b"c", b"\xff\xfe"]
    r = filled.ok(DeleteRange("b"))
    assert r.deleted == 1 and r.prev_kvs == () and r.header.revision == 9
    r = filled.ok(DeleteRange("\0", "\0", prev_kv=True))
    assert [kv.key for kv in r.prev_kvs] == ["c", b"\xff\xfe"]


def test_delete_of_nothing_keeps_the_revision(filled):
    r = filled.ok(DeleteRange(b"zzz", prev_kv=True))
    assert r == DeleteRangeResponse(ResponseHeader(7, 1), 0, ())


def test_tombstone_then_recreate_resets_version_and_create_revision(filled):
    filled.ok(Put(b"b", b"again"))  # 8, version 3
    filled.ok(DeleteRange(b"b"))  # 9
    assert filled.sm.read(Range(b"b"), 1).kvs == ()
    filled.ok(Put(b"b", b"new"))  # 10
    assert filled.sm.read(Range(b"b"), 1).kvs[0] == KeyValue(b"b", b"new", 10, 10, 1, 0)
    assert filled.sm.read(Range(b"b", revision=8), 1).kvs[0] == KeyValue(b"b", b"again", 3, 8, 3, 0)


# --- txn ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "compare,holds",
    [
        (Compare(b"b", "value", "==", b"0"), True),
        (Compare(b"b", "value", "==", "0"), True),  # str operand compares as utf-8 bytes
        (Compare(b"b", "value", "!=", b"0"), False),
        (Compare(b"b", "value", "<", b"1"), True),
        (Compare(b"b", "value", "<", b"0"), False),
        (Compare(b"b", "value", ">", b""), True),
        (Compare(b"b", "version", "==", 2), True),
        (Compare(b"b", "version", ">", 2), False),
        (Compare(b"b", "create", "==", 3), True),
        (Compare(b"b", "create", "<", 3), False),
        (Compare(b"b", "mod", "==", 5), True),
        (Compare(b"b", "mod", ">", 4), True),
        (Compare(b"ab", "lease", "==", 8), True),
        (Compare(b"ab", "lease", "!=", 8), False),
        # a missing key: version/create/mod/lease are 0, and any value compare fails
        (Compare(b"missing", "version", "==", 0), True),
        (Compare(b"missing", "create", "==", 0), True),
        (Compare(b"missing", "mod", "<", 1), True),
        (Compare(b"missing", "lease", "==", 0), True),
        (Compare(b"missing", "version", ">", 0), False),
        (Compare(b"missing", "value", "==", b""), False),
        (Compare(b"missing", "value", "!=", b"x"), False),
        # ranges: every existing key must satisfy the compare
        (Compare(b"a", "version", "==", 1, range_end=prefix_end(b"a")), True),
        (Compare(b"a", "version", "==", 1, range_end=b"c"), False),  # b has version 2
        (Compare(b"a", "mod", "<", 8, range_end=b"\0"), True),
        (Compare(b"x", "value", "==", b"", range_end=b"y"), False),  # empty range, value
        (Compare(b"x", "version", "==", 0, range_end=b"y"), True),  # empty range, version
    ],
)
def test_compare_semantics(filled, compare, holds):
    r = filled.ok(Txn((compare,), (Range(b"b"),), (Range(b"a"),)))
    assert r.succeeded is holds
    assert keys(r.responses[0]) == ([b"b"] if holds else [b"a"])
    assert filled.sm.revision == 7  # a read-only txn takes no revision


def test_compares_are_a_conjunction(filled):
    both = (Compare(b"a", "value", "==", b"3"), Compare(b"c", "value", "==", b"2"))
    assert filled.ok(Txn(both)).succeeded
    one_false = (Compare(b"a", "value", "==", b"3"), Compare(b"c", "value", "==", b"9"))
    assert not filled.ok(Txn(one_false)).succeeded
    assert filled.ok(Txn()).succeeded  # no compares: true


def test_txn_branches_write_at_one_revision(filled):
    txn = Txn(
        (Compare(b"a", "value", "==", b"3"),),
        (Put(b"a", b"4", prev_kv=True), Put(b"n", b"1"), DeleteRange(b"c", prev_kv=True), Range(b"\0", b"\0")),
        (Put(b"failed", b"1"),),
    )
    r = filled.ok(txn)
    assert r.succeeded and r.header.revision == 8
    put_a, put_n, del_c, rng = r.responses
    assert put_a == PutResponse(ResponseHeader(8, 1), KeyValue(b"a", b"3", 2, 2, 1, 0))
    assert del_c.deleted == 1 and del_c.prev_kvs[0].key == b"c"
    # the range inside the txn sees the txn's own earlier writes
    assert [(kv.key, kv.mod_revision) for kv in rng.kvs] == [
        (b"a", 8), (b"ab", 6), (b"b", 5), (b"n", 8), (b"\xff\xfe", 7)
    ]
    # failure branch
    r = filled.ok(txn)
    assert not r.succeeded and r.header.revision == 9
    assert filled.sm.read(Range(b"failed"), 1).kvs[0].mod_revision == 9


def test_nested_txn(filled):
    txn = Txn(
        (Compare(b"a", "version", "==", 1),),
        (
            Put(b"x", b"1"),
            Txn((Compare(b"b", "value", "==", b"nope"),), (Put(b"y", b"then"),), (Put(b"y", b"else"), Range(b"x"))),
            Txn((), (Range(b"y"),)),
        ),
    )
    r = filled.ok(txn)
    assert r.succeeded and r.header.revision == 8
    inner, inner2 = r.responses[1], r.responses[2]
    assert isinstance(inner, TxnResponse) and inner.succeeded is False
    assert inner.header == ResponseHeader(8, 1)
    assert inner.responses[1].kvs[0].value == b"1"  # sees the outer put
    assert inner2.responses[0].kvs[0].value == b"else"
    assert {kv.key: kv.mod_revision for kv in filled.sm.read(ALL, 1).kvs}[b"y"] == 8


def test_nested_compares_see_the_store_before_the_txn(filled):
    # the nested compare is on x, which the outer txn puts first: etcd evaluates all
    # compares before running anything, so the nested txn sees x as missing
    txn = Txn((), (Put(b"x", b"1"), Txn((Compare(b"x", "version", "==", 0),), (Put(b"saw", b"missing"),))))
    r = filled.ok(txn)
    assert r.responses[1].succeeded is True


def test_duplicate_key_txn_is_refused_before_anything_runs(filled):
    txn = Txn((Compare(b"a", "value", "==", b"never"),), (Put(b"a", b"1"), Put(b"a", b"2")), (Put(b"q", b"1"),))
    r = filled.do(txn)
    assert isinstance(r, InvalidRequest) and str(r) == "duplicate key given in txn request"
    assert filled.sm.revision == 7 and filled.sm.read(Range(b"q"), 1).kvs == ()


def test_txn_is_all_or_nothing(filled):
    filled.ok(Compact(4))
    cases = [
        Txn((), (Put(b"x", b"1"), Range(b"a", revision=3))),  # compacted
        Txn((), (Put(b"x", b"1"), Range(b"a", revision=99))),  # future
        Txn((), (Put(b"x", b"1"), Txn((), (Put(b"nokey", b"", ignore_value=True),)))),  # key not found
    ]
    for txn, err in zip(cases, (Compacted, FutureRevision, KeyNotFound)):
        assert isinstance(filled.do(txn), err)
    assert filled.sm.revision == 7 and filled.sm.read(Range(b"x"), 1).kvs == ()
    # the failing op on the branch not taken does not matter
    ok = Txn((Compare(b"a", "value", "==", b"3"),), (Put(b"x", b"1"),), (Range(b"a", revision=3),))
    assert filled.ok(ok).succeeded


def test_txn_that_writes_nothing_keeps_the_revision(filled):
    r = filled.ok(Txn((), (DeleteRange(b"zzz"), Range(b"a"))))
    assert r.header.revision == 7 and filled.sm.revision == 7


def test_lock_pattern_with_fencing_token():
    d = Driver()
    acquire = Txn((Compare("locks/j", "create", "==", 0),), (Put("locks/j", "owner-1"),), (Range("locks/j"),))
    r = d.ok(acquire)
    assert r.succeeded
    token = d.sm.read(Range("locks/j"), 1).kvs[0].create_revision
    assert not d.ok(acquire).succeeded
    guarded = Txn((Compare("locks/j", "create", "==", token),), (Put("data", "written"),))
    assert d.ok(guarded).succeeded
    d.ok(DeleteRange("locks/j"))
    d.ok(acquire)  # someone else takes it: a new create revision
    assert not d.ok(guarded).succeeded


# --- compaction ----------------------------------------------------------------------


def test_compaction_through_the_log(filled):
    r = filled.ok(Compact(5))
    assert r == CompactResponse(ResponseHeader(7, 1))
    assert filled.sm.compact_revision == 5
    with pytest.raises(Compacted) as info:
        filled.sm.read(Range(b"b", revision=4), 1)
    assert info.value.compact_revision == 5
    err = filled.do(Range(b"b", revision=4))
    assert isinstance(err, Compacted) and err.compact_revision == 5
    assert values(filled.sm.read(Range(b"b", revision=5), 1)) == [b"0"]
    assert isinstance(filled.do(Compact(5)), Compacted)
    assert isinstance(filled.do(Compact(3)), Compacted)
    assert isinstance(filled.do(Compact(8)), FutureRevision)
    assert filled.sm.revision == 7


def test_changes_since_through_the_state_machine(filled):
    evs = filled.sm.changes_since(5, "b", "c")
    assert [(e.type, e.revision, e.kv.key, e.prev_kv.value) for e in evs] == [("put", 5, b"b", b"1")]


def test_read_refuses_other_requests():
    sm = KVStateMachine()
    with pytest.raises(InvalidRequest):
        sm.read(Put(b"a", b"1"), 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        sm.read(Range(b""), 1)


# --- snapshots and determinism ----------------------------------------------------------


def test_snapshot_restore_round_trip(filled):
    filled.apply(Command("c", 1, 1, Put(b"s", b"1")), Command("c", 2, 1, Range(b"a", revision=99)))
    filled.ok(Compact(3))
    snap = filled.sm.snapshot()
    other = KVStateMachine()
    other.restore(snap)
    assert other.snapshot() == snap
    assert other.applied_index == filled.sm.applied_index and other.revision == filled.sm.revision
    assert other.compact_revision == 3 and other.now == filled.sm.now
    assert other.read(ALL, 1) == filled.sm.read(ALL, 1)
    # remembered results survive: a retry is still answered, not re-applied
    data = encode_batch([Command("c", 1, 1, Put(b"s", b"1")), Command("c", 2, 1, Range(b"a", revision=99))], 1001.0)
    index = filled.sm.applied_index + 1
    a, b = filled.sm.apply(index, 2, data), other.apply(index, 2, data)
    assert [result_to_plain(r) for r in a] == [result_to_plain(r) for r in b]
    assert isinstance(b[1], FutureRevision)
    assert other.revision == filled.sm.revision == 8
    assert other.apply(index, 2, data) == []  # replay after restore: ignored


@pytest.mark.parametrize(
    "data",
    [b"", b"junk", encode([1, 2, 3]), encode(["raftkv.kv", 99, 0, 0, 0.0, [1, 0, []], []]), encode(["raftkv.kv", 1, 0, 0, 0.0, [1, 0, [b"a"]], []])],
)
def test_restore_rejects_bad_snapshots_and_keeps_state(data):
    d = Driver()
    d.ok(Put(b"a", b"1"))
    before = d.sm.snapshot()
    with pytest.raises(InvalidRequest):
        d.sm.restore(data)
    assert d.sm.snapshot() == before


def _random_batches(seed: int, n: int) -> list[bytes]:
    """Random entries: puts, deletes, ranges, txns, compactions, retries and acks
    from several clients, with a clock that mostly moves forward."""
    rng = random.Random(seed)
    keys = [b"a", b"b", b"c", "d", "dd", b"e\xff", "f/1", "f/2"]
    clients = {f"c{i}": 0 for i in range(4)}
    sent: list[Command] = []
    batches = []
    now = 1000.0
    rev_guess = 1

    def random_op(depth=0):
        r = rng.random()
        k = rng.choice(keys)
        if depth == 0 and r < 0.1:
            return rng.choice([LeaseGrant(5000, 5), LeaseGrant(5000, 5), LeaseRevoke(5), LeaseKeepAlive(5),
                               LeaseExpire(5, rng.randint(0, 60)), LeaseCheckpoint(((5, rng.randint(0, 5000), rng.randint(0, 60)),)),
                               LeaseGrant(rng.randint(1, 9000))])
        if r < 0.4:
            return Put(k, rng.choice([b"v", "w", str(rng.randint(0, 9))]), lease=rng.choice([0, 0, 5]), prev_kv=rng.random() < 0.5)
        if r < 0.55:
            return DeleteRange(k, rng.choice([None, prefix_end(k), b"\0"]), prev_kv=rng.random() < 0.5)
        if r < 0.8:
            return Range(
                k,
                rng.choice([None, b"\0", prefix_end(k)]),
                limit=rng.choice([0, 1, 2]),
                revision=rng.choice([0, 0, rng.randint(1, rev_guess + 2)]),
                sort_order=rng.choice(["none", "ascend", "descend"]),
                sort_target=rng.choice(["key", "version", "create", "mod", "value"]),
                keys_only=rng.random() < 0.2,
                count_only=rng.random() < 0.1,
            )
        if r < 0.97 and depth < 2:
            cmp = Compare(k, rng.choice(["value", "version", "create", "mod", "lease"]), rng.choice(["==", "!=", "<", ">"]), 0)
            if cmp.target == "value":
                cmp = Compare(k, "value", cmp.op, rng.choice([b"v", "w"]))
            return Txn((cmp,), tuple(random_op(depth + 1) for _ in range(rng.randint(0, 3))), tuple(random_op(depth + 1) for _ in range(rng.randint(0, 2))))
        return Compact(rng.randint(1, rev_guess + 1))

    for _ in range(n):
        cmds = []
        for _ in range(rng.randint(0, 12)):
            r = rng.random()
            if r < 0.15 and sent:
                cmds.append(rng.choice(sent))  # a retry, possibly stale
                continue
            cid = rng.choice(list(clients) + [""])
            op = random_op()
            if cid:
                clients[cid] += 1
                seq = clients[cid]
                ack = max(1, seq - rng.randint(0, 5))
                cmd = Command(cid, seq, ack, op)
            else:
                cmd = Command("", 0, 0, op)
            sent.append(cmd)
            cmds.append(cmd)
            rev_guess += 1
        now += rng.choice([0.0, 0.5, 3.0, 40.0, -20.0])
        batches.append(encode_batch(cmds, now) if cmds or rng.random() < 0.5 else b"")
    return batches


@pytest.mark.parametrize("seed", range(6))
def test_replicas_fed_the_same_log_agree(seed):
    limits = Limits(max_session_results=4, max_sessions=3, session_ttl=60)
    batches = _random_batches(seed, 150)
    a, b = KVStateMachine(limits), KVStateMachine(limits)
    kinds = set()
    for index, data in enumerate(batches, 1):
        ra, rb = a.apply(index, 3, data), b.apply(index, 3, data)
        assert [result_to_plain(r) for r in ra] == [result_to_plain(r) for r in rb]
        kinds.update(type(r).__name__ for r in ra)
    assert a.snapshot() == b.snapshot()
    # the random log exercised successes and the deterministic failures
    assert {"PutResponse", "RangeResponse", "TxnResponse", "DeleteRangeResponse"} <= kinds
    assert len(kinds & {"Compacted", "FutureRevision", "StaleRequest", "InvalidRequest", "SessionExpired"}) >= 2


@pytest.mark.parametrize("seed", range(4))
def test_restored_replica_behaves_identically(seed):
    limits = Limits(max_session_results=4, max_sessions=3, session_ttl=60)
    batches = _random_batches(100 + seed, 160)
    a = KVStateMachine(limits)
    for index, data in enumerate(batches[:80], 1):
        a.apply(index, 1, data)
    b = KVStateMachine(limits)
    b.restore(a.snapshot())
    for index, data in enumerate(batches, 1):  # b also sees the replayed prefix
        ra, rb = a.apply(index, 2, data), b.apply(index, 2, data)
        assert [result_to_plain(r) for r in ra] == [result_to_plain(r) for r in rb]
    assert a.snapshot() == b.snapshot()


def test_different_logs_give_different_snapshots():
    a, b = KVStateMachine(), KVStateMachine()
    a.apply(1, 1, encode_batch([Command("", 0, 0, Put(b"k", b"1"))], 1.0))
    b.apply(1, 1, encode_batch([Command("", 0, 0, Put(b"k", b"2"))], 1.0))
    assert a.snapshot() != b.snapshot()


def test_results_are_raftkv_errors_or_responses():
    sm = KVStateMachine()
    for index, data in enumerate(_random_batches(7, 60), 1):
        for r in sm.apply(index, 1, data):
            assert isinstance(r, (RaftKVError, *RESPONSE_TYPES.values()))


_FUZZ_BASE = [b for b in _random_batches(11, 40) if b]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupt_entries_never_raise_out_of_apply(data):
    """A malformed entry must not crash apply(): every replica would crash on it, forever."""
    raw = bytearray(data.draw(st.sampled_from(_FUZZ_BASE)))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    sm = KVStateMachine()
    results = sm.apply(1, 1, bytes(raw))
    assert sm.applied_index == 1
    for r in results:
        assert isinstance(r, (RaftKVError, *RESPONSE_TYPES.values()))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_entries_never_raise_out_of_apply(raw):
    sm = KVStateMachine()
    results = sm.apply(1, 1, b"\x01" + raw)
    assert all(isinstance(r, RaftKVError) or hasattr(r, "header") for r in results)


def test_highest_member_id_survives_snapshots_and_format_2_still_loads():
    from kv.codec import decode

    sm = KVStateMachine()
    sm.note_members([1, 2, 3])
    sm.note_members([1, 2, 3, 4])
    sm.note_members([1, 2, 4])  # a removal never lowers it
    assert sm.member_high == 4
    again = KVStateMachine()
    again.restore(sm.snapshot())
    assert again.member_high == 4
    plain = decode(sm.snapshot())
    plain[1] = 2  # what a replica before membership changes wrote
    old = KVStateMachine()
    old.restore(encode(plain[:8]))
    assert old.member_high == 0
    with pytest.raises(CodecError):
        old.restore(encode(plain))  # format 2 with a ninth field is not a snapshot this reads
    assert old.member_high == 0  # a refused snapshot changes nothing
