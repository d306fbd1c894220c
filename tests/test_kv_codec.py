"""kv.codec: round trips, exact format corners, and malformed input."""

from __future__ import annotations

import enum
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kv.codec import FORMAT_V1, decode, encode
from kv.errors import CodecError, InvalidRequest, RaftKVError


def _normal(value):
    """What a value decodes to: tuples become lists (dict keys stay tuples)."""
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
hashables = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=3).map(tuple),
    max_leaves=6,
)
plain_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6)
    | st.lists(children, max_size=4).map(tuple)
    | st.dictionaries(hashables, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(plain_values)
def test_round_trip_random_values(value):
    data = encode(value)
    assert data[0] == FORMAT_V1
    back = decode(data)
    assert back == _normal(value)
    assert encode(back) == data  # and byte-identical when re-encoded


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=10))
def test_floats_bit_exact(values):
    back = decode(encode(values))
    assert [struct.pack("<d", v) for v in back] == [struct.pack("<d", v) for v in values]


@pytest.mark.parametrize(
    "value",
    [
        0, 1, -1, 127, 128, -128, -129, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1,
        2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, -(2**64), 10**40, -(10**40), 2**1000,
    ],
)
def test_int_boundaries(value):
    back = decode(encode(value))
    assert back == value and type(back) is int


def test_int_sizes_are_compact():
    assert len(encode(5)) == 3
    assert len(encode(1000)) == 6
    assert len(encode(2**40)) == 10


def test_bool_none_are_not_ints():
    assert decode(encode([True, False, None, 1, 0])) == [True, False, None, 1, 0]
    assert [type(v) for v in decode(encode([True, 1]))] == [bool, int]


@pytest.mark.parametrize("n", [0, 1, 255, 256, 70_000])
def test_long_strings_bytes_lists_dicts(n):
    value = ["x" * n, b"y" * n, list(range(min(n, 300))), {i: i for i in range(min(n, 300))}]
    assert decode(encode(value)) == value


def test_str_and_bytes_stay_distinct():
    assert decode(encode(["a", b"a"])) == ["a", b"a"]
    assert type(decode(encode("é"))) is str


def test_dict_keys_of_any_plain_type():
    value = {None: 1, True: 2, 3: 3, 1.5: 4, "s": 5, b"b": 6, (1, (2, b"x")): 7}
    assert decode(encode(value)) == value


def test_dict_order_is_preserved_and_bytes_deterministic():
    a = {"b": 1, "a": 2}
    b = {"a": 2, "b": 1}
    assert list(decode(encode(a))) == ["b", "a"]
    assert encode(a) == encode(dict(a))
    assert encode(a) != encode(b)  # order is part of the encoding, documented


def test_tuple_decodes_as_list():
    assert decode(encode((1, (2, 3)))) == [1, [2, 3]]


def test_subclasses_encode_as_base_types():
    class Color(enum.IntEnum):
        RED = 3

    class Name(str, enum.Enum):
        A = "a"

    assert encode(Color.RED) == encode(3)
    assert encode(Name.A) == encode("a")
    assert type(decode(encode(Color.RED))) is int


@pytest.mark.parametrize("value", [{1, 2}, object(), 1j, bytearray(b"x"), [frozenset()]])
def test_unsupported_types_raise_codec_error(value):
    with pytest.raises(CodecError, match="cannot encode a value of type"):
        encode(value)


def test_cyclic_value_raises_codec_error():
    cyc: list = []
    cyc.append(cyc)
    with pytest.raises(CodecError):
        encode(cyc)


def test_codec_error_is_invalid_request_and_raftkv_error():
    assert issubclass(CodecError, InvalidRequest)
    assert issubclass(CodecError, RaftKVError)


# --- malformed input -------------------------------------------------------------


def test_every_truncation_is_rejected():
    data = encode({"key": b"k" * 300, "n": [1, 2**40, 2**80, -5, 1.5, None, True, "x" * 300]})
    for cut in range(len(data)):
        with pytest.raises(CodecError):
            decode(data[:cut])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x02N",  # unknown format version
        b"\x00N",
        b"\x01",  # no value
        b"\x01Z",  # unknown tag
        b"\x01NN",  # trailing bytes
        b"\x01s\x02\xff\xfe",  # invalid utf-8
        b"\x01L\xff\xff\xff\xff",  # absurd list length
        b"\x01M\xff\xff\xff\x7f",  # absurd dict length
        b"\x01S\xff\xff\xff\xffabc",  # absurd str length
        b"\x01m\x01m\x00N",  # dict used as a dict key: unhashable
        b"\x01I\x00\x00\x00\x00",  # zero-length big int
        b"\x01q\x01\x02",  # short int64
    ],
)
def test_malformed_inputs(data):
    with pytest.raises(CodecError):
        decode(data)


def test_deep_nesting_is_rejected_not_crashing():
    data = b"\x01" + b"l\x01" * 100_000 + b"N"
    with pytest.raises(CodecError):
        decode(data)


def test_decode_rejects_non_bytes():
    with pytest.raises(CodecError):
        decode("not bytes")  # type: ignore[arg-type]
    assert decode(bytearray(encode(5))) == 5
    assert decode(memoryview(encode([1]))) == [1]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_codec_error(data):
    try:
        value = decode(b"\x01" + data)
    except CodecError:
        return
    assert encode(value) is not None  # anything that decodes is plain


@settings(max_examples=300, deadline=None)
@given(plain_values, st.data())
def test_corrupted_encodings_never_raise_other_errors(value, data):
    raw = bytearray(encode(value))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(raw))
    except CodecError:
        pass


def test_nan_round_trips():
    assert math.isnan(decode(encode(float("nan"))))
