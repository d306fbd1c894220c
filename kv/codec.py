"""A small, versioned, tagged binary encoding for plain values.

Everything the state machine writes into the Raft log or into a snapshot goes
through here. It is deliberately not pickle: decoding never runs code, and the
format is specified below so it can outlive a Python or library upgrade.

Plain values: None, bool, int (any size), float, str, bytes, list and tuple
(both decode to list), and dict whose keys are plain hashable values.

Format (version 1). An encoding is one format byte (FORMAT_V1) followed by one
value. A value is a one-byte tag followed by its payload, little-endian:

    N                   None
    T / F               True / False
    b <i8>              int in [-2**7, 2**7)
    i <i32>             int in [-2**31, 2**31)
    q <i64>             int in [-2**63, 2**63)
    I <u32 n> <n bytes> any other int, two's complement, big-endian
    d <f64>             float (IEEE 754 double)
    s <u8 n> <n bytes>  str, utf-8, shorter than 256 bytes
    S <u32 n> <n bytes> str, utf-8
    y <u8 n> <n bytes>  bytes shorter than 256
    Y <u32 n> <n bytes> bytes
    l <u8 n> <values>   list of fewer than 256 items
    L <u32 n> <values>  list
    m <u8 n> <pairs>    dict of fewer than 256 items: key, value, key, value...
    M <u32 n> <pairs>   dict

Dict entries are written in the dict's iteration order, so equal dicts built
in the same order encode to identical bytes. A list used as a dict key decodes
as a tuple (the only hashable form).
"""

from __future__ import annotations

import struct
from typing import Any

from kv.errors import CodecError

__all__ = ["FORMAT_V1", "encode", "decode"]

FORMAT_V1 = 1

_N, _T, _F = b"N"[0], b"T"[0], b"F"[0]
_B8, _I32, _I64, _BIG = b"b"[0], b"i"[0], b"q"[0], b"I"[0]
_FLOAT = b"d"[0]
_STR8, _STR32 = b"s"[0], b"S"[0]
_BYTES8, _BYTES32 = b"y"[0], b"Y"[0]
_LIST8, _LIST32 = b"l"[0], b"L"[0]
_DICT8, _DICT32 = b"m"[0], b"M"[0]

_NONE_B, _TRUE_B, _FALSE_B = b"N", b"T", b"F"

_pack_b8 = struct.Struct("<Bb").pack
_pack_i32 = struct.Struct("<Bi").pack
_pack_i64 = struct.Struct("<Bq").pack
_pack_f64 = struct.Struct("<Bd").pack
_pack_len8 = struct.Struct("<BB").pack
_pack_len32 = struct.Struct("<BI").pack

_unpack_b8 = struct.Struct("<b").unpack_from
_unpack_i32 = struct.Struct("<i").unpack_from
_unpack_i64 = struct.Struct("<q").unpack_from
_unpack_u32 = struct.Struct("<I").unpack_from
_unpack_f64 = struct.Struct("<d").unpack_from

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def encode(obj: Any) -> bytes:
    """Encode a plain value.

    Args:
        obj: None, bool, int, float, str, bytes, list, tuple or dict, nested.

    Returns:
        The encoding, starting with the format byte. Deterministic: the same
        value (and, for dicts, the same insertion order) gives the same bytes.

    Raises:
        CodecError: obj contains a value of another type, or is nested too
            deeply (or cyclic) to encode.
    """
    out = bytearray(b"\x01")
    try:
        _encode_into(obj, out)
    except RecursionError:
        raise CodecError("value is nested too deeply (or cyclic) to encode") from None
    return bytes(out)


def _encode_into(obj: Any, out: bytearray) -> None:
    t = type(obj)
    if t is bytes:
        n = len(obj)
        out += _pack_len8(_BYTES8, n) if n < 256 else _pack_len32(_BYTES32, n)
        out += obj
    elif t is str:
        b = obj.encode("utf-8", "surrogatepass")
        n = len(b)
        out += _pack_len8(_STR8, n) if n < 256 else _pack_len32(_STR32, n)
        out += b
    elif t is int:
        if -128 <= obj < 128:
            out += _pack_b8(_B8, obj)
        elif -2147483648 <= obj < 2147483648:
            out += _pack_i32(_I32, obj)
        elif _I64_MIN <= obj <= _I64_MAX:
            out += _pack_i64(_I64, obj)
        else:
            raw = obj.to_bytes((obj.bit_length() + 8) // 8, "big", signed=True)
            out += _pack_len32(_BIG, len(raw))
            out += raw
    elif t is bool:
        out += _TRUE_B if obj else _FALSE_B
    elif obj is None:
        out += _NONE_B
    elif t is list or t is tuple:
        n = len(obj)
        out += _pack_len8(_LIST8, n) if n < 256 else _pack_len32(_LIST32, n)
        for item in obj:
            _encode_into(item, out)
    elif t is dict:
        n = len(obj)
        out += _pack_len8(_DICT8, n) if n < 256 else _pack_len32(_DICT32, n)
        for k, v in obj.items():
            _encode_into(k, out)
            _encode_into(v, out)
    elif t is float:
        out += _pack_f64(_FLOAT, obj)
    # Subclasses (IntEnum, str enums, ...) encode as their base plain type.
    elif isinstance(obj, bool):
        out += _TRUE_B if obj else _FALSE_B
    elif isinstance(obj, int):
        _encode_into(int(obj), out)
    elif isinstance(obj, str):
        _encode_into("".join((obj,)), out)
    elif isinstance(obj, bytes):
        _encode_into(bytes(obj), out)
    elif isinstance(obj, float):
        _encode_into(float(obj), out)
    else:
        raise CodecError(
            f"cannot encode a value of type {t.__name__}; "
            "use None, bool, int, float, str, bytes, list, tuple or dict"
        )


def decode(data: bytes) -> Any:
    """Decode bytes produced by `encode`.

    Args:
        data: the encoding (bytes, bytearray or memoryview).

    Returns:
        The plain value; lists and tuples come back as lists.

    Raises:
        CodecError: data is empty, truncated, has trailing bytes, an unknown
            format byte or tag, invalid utf-8, or an unhashable dict key.
    """
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CodecError(f"can only decode bytes, got {type(data).__name__}")
        data = bytes(data)
    if not data:
        raise CodecError("cannot decode empty input")
    if data[0] != FORMAT_V1:
        raise CodecError(
            f"unknown codec format {data[0]} (this replica reads format {FORMAT_V1}); "
            "upgrade the replica or check the data is a raftkv encoding"
        )
    try:
        value, pos = _decode_at(data, 1)
    except CodecError:
        raise
    except (IndexError, struct.error):
        raise CodecError("truncated input") from None
    except UnicodeDecodeError as exc:
        raise CodecError(f"invalid utf-8 in a string: {exc.reason}") from None
    except TypeError as exc:  # unhashable dict key
        raise CodecError(f"invalid dict key: {exc}") from None
    except RecursionError:
        raise CodecError("input is nested too deeply to decode") from None
    if pos != len(data):
        raise CodecError(f"{len(data) - pos} trailing bytes after the encoded value")
    return value


def _decode_at(data: bytes, pos: int) -> tuple[Any, int]:
    tag = data[pos]
    pos += 1
    if tag == _STR8 or tag == _BYTES8:
        end = pos + 1 + data[pos]
        pos += 1
        if end > len(data):
            raise CodecError("truncated input")
        raw = data[pos:end]
        return (raw.decode("utf-8", "surrogatepass") if tag == _STR8 else raw), end
    if tag == _B8:
        return _unpack_b8(data, pos)[0], pos + 1
    if tag == _I32:
        return _unpack_i32(data, pos)[0], pos + 4
    if tag == _LIST8 or tag == _LIST32:
        if tag == _LIST8:
            n = data[pos]
            pos += 1
        else:
            n = _unpack_u32(data, pos)[0]
            pos += 4
        if n > len(data) - pos:  # every item takes at least one byte
            raise CodecError("truncated input")
        items = []
        append = items.append
        for _ in range(n):
            item, pos = _decode_at(data, pos)
            append(item)
        return items, pos
    if tag == _T:
        return True, pos
    if tag == _F:
        return False, pos
    if tag == _N:
        return None, pos
    if tag == _I64:
        return _unpack_i64(data, pos)[0], pos + 8
    if tag == _STR32 or tag == _BYTES32:
        n = _unpack_u32(data, pos)[0]
        pos += 4
        end = pos + n
        if end > len(data):
            raise CodecError("truncated input")
        raw = data[pos:end]
        return (raw.decode("utf-8", "surrogatepass") if tag == _STR32 else raw), end
    if tag == _DICT8 or tag == _DICT32:
        if tag == _DICT8:
            n = data[pos]
            pos += 1
        else:
            n = _unpack_u32(data, pos)[0]
            pos += 4
        if 2 * n > len(data) - pos:
            raise CodecError("truncated input")
        out: dict[Any, Any] = {}
        for _ in range(n):
            k, pos = _decode_at(data, pos)
            if type(k) is list:
                k = _freeze(k)
            out[k], pos = _decode_at(data, pos)
        return out, pos
    if tag == _FLOAT:
        return _unpack_f64(data, pos)[0], pos + 8
    if tag == _BIG:
        n = _unpack_u32(data, pos)[0]
        pos += 4
        end = pos + n
        if end > len(data) or n == 0:
            raise CodecError("truncated input")
        return int.from_bytes(data[pos:end], "big", signed=True), end
    raise CodecError(f"unknown tag {tag:#04x} at offset {pos - 1}")


def _freeze(value: Any) -> Any:
    """Turn a decoded list (and lists inside it) into tuples, for use as a dict key."""
    if type(value) is list:
        return tuple(_freeze(v) for v in value)
    return value
