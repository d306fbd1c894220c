"""kv.requests, kv.responses and kv.validation: plain forms, prefix_end, limits."""

from __future__ import annotations

import pydantic
import pytest

from kv.codec import decode, encode
from kv.errors import Compacted, InvalidRequest, RequestTooLarge, StaleRequest
from kv.limits import Limits
from kv.requests import Compact, Compare, DeleteRange, Put, Range, Txn, op_from_plain, prefix_end
from kv.responses import (
    CompactResponse,
    DeleteRangeResponse,
    KeyValue,
    PutResponse,
    RangeResponse,
    ResponseHeader,
    TxnResponse,
    result_from_plain,
    result_to_plain,
)
from kv.validation import validate

ALL_OPS = [
    Put(b"k", b"v"),
    Put("k", "v", lease=7, prev_kv=True),
    Put("k", "", ignore_value=True),
    Range("a"),
    Range(b"a", b"z", limit=3, revision=5, sort_order="descend", sort_target="mod", keys_only=True),
    Range(b"\0", b"\0", count_only=True),
    DeleteRange("a", prefix_end("a"), prev_kv=True),
    Compact(10),
    Txn(
        (Compare("a", "value", "==", b"x"), Compare("b", "version", ">", 2, range_end="c")),
        (Put("a", "y"), Txn((), (Range("q"),), (DeleteRange("r"),))),
        (Range("a"),),
    ),
    Txn(),
]


@pytest.mark.parametrize("op", ALL_OPS, ids=lambda op: type(op).__name__)
def test_plain_round_trip_through_codec(op):
    assert op_from_plain(decode(encode(op.to_plain()))) == op


def test_txn_accepts_lists_and_stores_tuples():
    txn = Txn([Compare("a", "mod", "<", 3)], [Put("a", "b")], [])
    assert txn.compare == (Compare("a", "mod", "<", 3),)
    assert type(txn.success) is tuple and txn.failure == ()
    hash(txn)


@pytest.mark.parametrize(
    "plain",
    [None, [], [99], ["put"], [1, b"k"], [True, b"k", b"v", 0, False, False, False], [4, [], [], "x"], [4, [], [[5, 3]], []]],
)
def test_malformed_plain_requests(plain):
    with pytest.raises(InvalidRequest):
        op_from_plain(plain)


@pytest.mark.parametrize(
    "prefix,end",
    [
        (b"a", b"b"),
        (b"abc", b"abd"),
        (b"a\xff", b"b"),
        (b"a\xff\xff", b"b"),
        (b"\xff", b"\0"),
        (b"\xff\xff", b"\0"),
        (b"", b"\0"),
        ("jobs/", b"jobs0"),
        ("é", "é".encode()[:-1] + bytes(["é".encode()[-1] + 1])),
    ],
)
def test_prefix_end(prefix, end):
    assert prefix_end(prefix) == end


# --- responses --------------------------------------------------------------------

HEADER = ResponseHeader(9, 3)
KV = KeyValue("k", b"v", 2, 9, 4, 0)
RESPONSES = [
    PutResponse(HEADER),
    PutResponse(HEADER, KV),
    RangeResponse(HEADER, (KV, KeyValue(b"\xff", "s", 1, 1, 1, 5)), 7, True),
    DeleteRangeResponse(HEADER, 2, (KV,)),
    TxnResponse(HEADER, False, (PutResponse(HEADER), TxnResponse(HEADER, True, (RangeResponse(HEADER),)))),
    CompactResponse(HEADER),
]


@pytest.mark.parametrize("resp", RESPONSES, ids=lambda r: type(r).__name__)
def test_response_plain_round_trip(resp):
    assert result_from_plain(decode(encode(result_to_plain(resp)))) == resp


def test_error_plain_round_trip_keeps_class_message_and_attributes():
    err = Compacted("revision 3 has been compacted", 7)
    back = result_from_plain(decode(encode(result_to_plain(err))))
    assert type(back) is Compacted and str(back) == str(err) and back.compact_revision == 7
    back = result_from_plain(result_to_plain(StaleRequest("old")))
    assert type(back) is StaleRequest and str(back) == "old"


# --- validation -------------------------------------------------------------------


@pytest.mark.parametrize("op", ALL_OPS, ids=lambda op: type(op).__name__)
def test_valid_requests_pass(op):
    validate(op)


@pytest.mark.parametrize(
    "op,fragment",
    [
        (Put(1, b"v"), "Put.key must be bytes or str, got int"),  # type: ignore[arg-type]
        (Put(b"k", 3.5), "Put.value must be bytes or str, got float"),  # type: ignore[arg-type]
        (Put(b"k", None), "got NoneType"),  # type: ignore[arg-type]
        (Put(bytearray(b"k"), b"v"), "got bytearray"),  # type: ignore[arg-type]
        (Put(b"", b"v"), "Put.key is empty"),
        (Put("", b"v"), "Put.key is empty"),
        (Put("\ud800", b"v"), "lone surrogate"),
        (Put(b"k", b"v", lease=-1), "Put.lease must be >= 0"),
        (Put(b"k", b"v", lease=True), "Put.lease must be an int, got bool"),
        (Put(b"k", b"v", prev_kv=1), "Put.prev_kv must be a bool"),  # type: ignore[arg-type]
        (Put(b"k", b"v", ignore_value=True), "must be empty when ignore_value"),
        (Put(b"k", b"", lease=3, ignore_lease=True), "must be 0 when ignore_lease"),
        (Range(b""), "Range.key is empty"),
        (Range(b"a", 5), "Range.range_end must be bytes, str or None, got int"),  # type: ignore[arg-type]
        (Range(b"a", limit=-1), "Range.limit must be >= 0"),
        (Range(b"a", revision=-2), "Range.revision must be >= 0"),
        (Range(b"a", sort_order="up"), "Range.sort_order must be one of"),  # type: ignore[arg-type]
        (Range(b"a", sort_target="size"), "Range.sort_target must be one of"),  # type: ignore[arg-type]
        (Range(b"a", keys_only="yes"), "Range.keys_only must be a bool"),  # type: ignore[arg-type]
        (DeleteRange(b""), "DeleteRange.key is empty"),
        (DeleteRange(b"a", prev_kv=None), "DeleteRange.prev_kv must be a bool"),  # type: ignore[arg-type]
        (Compact(0), "Compact.revision must be >= 1"),
        (Compact("3"), "Compact.revision must be an int, got str"),  # type: ignore[arg-type]
        (Txn((Compare(b"a", "size", "==", 1),)), "Compare.target must be one of"),  # type: ignore[arg-type]
        (Txn((Compare(b"a", "version", "<=", 1),)), "Compare.op must be one of"),  # type: ignore[arg-type]
        (Txn((Compare(b"a", "version", "==", b"1"),)), "must be an int, got bytes"),
        (Txn((Compare(b"a", "value", "==", 1),)), "must be bytes or str, got int"),
        (Txn((Compare(b"", "value", "==", b""),)), "Compare.key is empty"),
        (Txn((), (Compact(3),)), "Compact is not allowed inside a Txn"),
        (Txn((), (Put(b"", b"v"),)), "Put.key is empty"),
        (Txn((), (), (Txn((), (Range(b"a", limit=-1),)),)), "Range.limit"),
        (Txn(("a",)), "Txn.compare items must be Compare"),  # type: ignore[arg-type]
        ("put a b", "unsupported request type str"),
    ],
)
def test_invalid_requests(op, fragment):
    with pytest.raises(InvalidRequest) as info:
        validate(op)
    assert fragment in str(info.value)
    assert not isinstance(info.value, RequestTooLarge)


def test_request_too_large():
    limits = Limits(max_request_bytes=1000)
    validate(Put(b"k", b"x" * 900), limits)
    with pytest.raises(RequestTooLarge, match="more than the limit of 1000"):
        validate(Put(b"k", b"x" * 1000), limits)
    with pytest.raises(RequestTooLarge):
        validate(Put(b"k", b"v"), limits, size=1001)
    validate(Put(b"k", b"x" * 5000), limits, size=0)  # size check skipped
    # default limit: 1.5 MiB
    validate(Put(b"k", b"x" * 1_500_000))
    with pytest.raises(RequestTooLarge):
        validate(Put(b"k", b"x" * 1_572_864))


def test_txn_op_limit():
    ops = tuple(Put(f"k{i}", b"v") for i in range(128))
    validate(Txn((), ops))
    with pytest.raises(RequestTooLarge, match="129 operations"):
        validate(Txn((), ops + (Put(b"k-extra", b"v"),)))
    cmps = tuple(Compare(f"k{i}", "version", ">", 0) for i in range(129))
    with pytest.raises(RequestTooLarge):
        validate(Txn(cmps))
    # nested txns draw on what the enclosing txn leaves: 100 used outside, 28 left
    outer = tuple(Put(f"o{i}", b"v") for i in range(99))
    validate(Txn((), outer + (Txn((), tuple(Put(f"i{i}", b"v") for i in range(28))),)))
    with pytest.raises(RequestTooLarge):
        validate(Txn((), outer + (Txn((), tuple(Put(f"i{i}", b"v") for i in range(29))),)))
    validate(Txn((), ops[:5]), Limits(max_txn_ops=5))
    with pytest.raises(RequestTooLarge):
        validate(Txn((), ops[:6]), Limits(max_txn_ops=5))


DUP = "duplicate key given in txn request"


@pytest.mark.parametrize(
    "txn",
    [
        Txn((), (Put(b"a", b"1"), Put(b"a", b"2"))),
        Txn((), (Put("a", b"1"), Put(b"a", b"2"))),  # str and bytes name the same key
        Txn((), (Put(b"b", b"1"), DeleteRange(b"a", b"c"))),
        Txn((), (DeleteRange(b"a", b"c"), Put(b"b", b"1"))),
        Txn((), (DeleteRange(b"a"), Put(b"a", b"1"))),
        Txn((), (DeleteRange(b"a", b"\0"), Put(b"zzz", b"1"))),  # range to the end
        Txn((), (Put(b"a", b"1"), Txn((), (Put(b"a", b"2"),)))),
        Txn((), (Txn((), (), (Put(b"a", b"2"),)), Put(b"a", b"1"))),
        Txn((), (Put(b"b", b"1"), Txn((), (DeleteRange(b"a", b"c"),)))),
        Txn((), (DeleteRange(b"a", b"c"), Txn((), (Put(b"b", b"1"),)))),
        # sibling nested txns: a put in the first, a delete in the second
        Txn((), (Txn((), (Put(b"b", b"1"),)), Txn((), (DeleteRange(b"a", b"c"),)))),
        Txn((), (Txn((), (Put(b"b", b"1"),)), Txn((), (Put(b"b", b"2"),)))),
        # the rule applies to the failure branch too, and deep inside
        Txn((), (), (Put(b"a", b"1"), Txn((), (Txn((), (Put(b"a", b"2"),)),)))),
    ],
)
def test_duplicate_keys_in_txn(txn):
    with pytest.raises(InvalidRequest, match=DUP):
        validate(txn)


@pytest.mark.parametrize(
    "txn",
    [
        Txn((), (Put(b"a", b"1"),), (Put(b"a", b"2"),)),  # then/else exclude each other
        Txn((), (Txn((), (Put(b"a", b"1"),), (Put(b"a", b"2"),)),)),
        Txn((), (Txn((), (Put(b"b", b"1"),), (DeleteRange(b"a", b"c"),)),)),
        Txn((), (DeleteRange(b"a", b"c"), DeleteRange(b"b", b"d"))),  # deletes may overlap
        Txn((), (Put(b"c", b"1"), DeleteRange(b"a", b"c"))),  # range end is exclusive
        Txn((), (Put(b"a", b"1"), Range(b"a"), Range(b"a"))),  # reads do not count
    ],
)
def test_allowed_txn_shapes(txn):
    validate(txn)


def test_limits_are_validated():
    with pytest.raises(pydantic.ValidationError):
        Limits(max_txn_ops=0)
    with pytest.raises(pydantic.ValidationError):
        Limits(session_ttl=-1)
    with pytest.raises(pydantic.ValidationError):
        Limits(unknown=1)  # type: ignore[call-arg]
    limits = Limits(max_sessions=3)
    with pytest.raises(pydantic.ValidationError):
        limits.max_sessions = 4  # type: ignore[misc]
