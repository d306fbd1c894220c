"""Request validation: types, enum values, size limits and the txn key rule.

`validate` is a pure function of the request and the limits, so the leader can
run it before proposing (to answer the client early) and every replica runs it
again when applying (so a request that slipped past is rejected identically
everywhere instead of half-applied).
"""

from __future__ import annotations

from typing import Any

from kv.codec import encode
from kv.errors import InvalidRequest, RequestTooLarge
from kv.limits import DEFAULT_LIMITS, Limits
from kv.requests import (
    COMPARE_OPS,
    COMPARE_TARGETS,
    SORT_ORDERS,
    SORT_TARGETS,
    MAX_LEASE_TTL_MS,
    Compact,
    Compare,
    LeaseCheckpoint,
    LeaseExpire,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRevoke,
    DeleteRange,
    Put,
    Range,
    Txn,
    key_bytes,
)

__all__ = ["validate", "range_bounds"]

DUPLICATE_KEY_MESSAGE = "duplicate key given in txn request"


def validate(op: Any, limits: Limits = DEFAULT_LIMITS, *, size: int | None = None) -> None:
    """Check a request before it is proposed or applied.

    Args:
        op: a request (Put, Range, DeleteRange, Txn or Compact).
        limits: the bounds to enforce.
        size: the request's encoded size in bytes if the caller knows it
            (the state machine does); None to compute it; 0 to skip the size
            check (local reads, which never enter the log).

    Raises:
        InvalidRequest: wrong field types (the message names the type received),
            an empty key, a bad enum value or negative number, a Compact inside
            a Txn, or a txn that writes a key twice or puts and deletes the
            same key ("duplicate key given in txn request").
        RequestTooLarge: the encoding exceeds limits.max_request_bytes, or a
            txn has more than limits.max_txn_ops operations.
    """
    t = type(op)
    if t is Compact:
        _check_int(op.revision, "Compact.revision", minimum=1)
    elif t in _LEASE_CHECKS:
        _LEASE_CHECKS[t](op)
    elif _check_op(op, limits.max_txn_ops):
        if t is Txn:
            _branch_writes(op.success)
            _branch_writes(op.failure)
    else:
        raise InvalidRequest(
            f"unsupported request type {t.__name__}; use Put, Range, DeleteRange, Txn, Compact "
            "or a lease request"
        )
    if size is None:
        size = len(encode(op.to_plain()))
    if size > limits.max_request_bytes:
        raise RequestTooLarge(
            f"request is {size} bytes, more than the limit of {limits.max_request_bytes}; "
            "split it into smaller requests"
        )


def range_bounds(key: Any, range_end: Any) -> tuple[bytes, bytes | None]:
    """Normalise a (key, range_end) pair to stored bytes form.

    Returns:
        (start, end): end is None for the single key `start` (range_end None
        or empty), b"\\0" for "every key >= start", otherwise the exclusive end.
    """
    start = key_bytes(key)
    if range_end is None:
        return start, None
    end = key_bytes(range_end)
    return start, (end or None)


# --- field checks ------------------------------------------------------------


def _check_key(key: Any, what: str) -> None:
    if not isinstance(key, (bytes, str)):
        raise InvalidRequest(f"{what} must be bytes or str, got {type(key).__name__}")
    if not key:
        raise InvalidRequest(f"{what} is empty; use b'\\0' with range_end=b'\\0' to select all keys")
    key_bytes(key)  # rejects str that cannot be utf-8 encoded


def _check_range_end(range_end: Any, what: str) -> None:
    if range_end is None:
        return
    if not isinstance(range_end, (bytes, str)):
        raise InvalidRequest(f"{what} must be bytes, str or None, got {type(range_end).__name__}")
    key_bytes(range_end)


def _check_value(value: Any, what: str) -> None:
    if not isinstance(value, (bytes, str)):
        raise InvalidRequest(f"{what} must be bytes or str, got {type(value).__name__}")


def _check_int(value: Any, what: str, minimum: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"{what} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise InvalidRequest(f"{what} must be >= {minimum}, got {value}")
    if value >= 2**63:
        raise InvalidRequest(f"{what} must fit in a signed 64-bit int, got {value}")


def _check_bool(value: Any, what: str) -> None:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{what} must be a bool, got {type(value).__name__}")


def _check_choice(value: Any, choices: tuple[str, ...], what: str) -> None:
    if type(value) is not str or value not in choices:
        raise InvalidRequest(f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_put(op: Put) -> None:
    _check_key(op.key, "Put.key")
    _check_value(op.value, "Put.value")
    _check_int(op.lease, "Put.lease")
    _check_bool(op.prev_kv, "Put.prev_kv")
    _check_bool(op.ignore_value, "Put.ignore_value")
    _check_bool(op.ignore_lease, "Put.ignore_lease")
    if op.ignore_value and op.value:
        raise InvalidRequest("Put.value must be empty when ignore_value is set")
    if op.ignore_lease and op.lease:
        raise InvalidRequest("Put.lease must be 0 when ignore_lease is set")


def _check_range(op: Range) -> None:
    _check_key(op.key, "Range.key")
    _check_range_end(op.range_end, "Range.range_end")
    _check_int(op.limit, "Range.limit")
    _check_int(op.revision, "Range.revision")
    _check_choice(op.sort_order, SORT_ORDERS, "Range.sort_order")
    _check_choice(op.sort_target, SORT_TARGETS, "Range.sort_target")
    _check_bool(op.keys_only, "Range.keys_only")
    _check_bool(op.count_only, "Range.count_only")


def _check_delete(op: DeleteRange) -> None:
    _check_key(op.key, "DeleteRange.key")
    _check_range_end(op.range_end, "DeleteRange.range_end")
    _check_bool(op.prev_kv, "DeleteRange.prev_kv")


def _check_compare(c: Any) -> None:
    if type(c) is not Compare:
        raise InvalidRequest(f"Txn.compare items must be Compare, got {type(c).__name__}")
    _check_key(c.key, "Compare.key")
    _check_range_end(c.range_end, "Compare.range_end")
    _check_choice(c.target, COMPARE_TARGETS, "Compare.target")
    _check_choice(c.op, COMPARE_OPS, "Compare.op")
    if c.target == "value":
        _check_value(c.operand, "Compare.operand for target 'value'")
    else:
        if not isinstance(c.operand, int) or isinstance(c.operand, bool):
            raise InvalidRequest(
                f"Compare.operand for target {c.target!r} must be an int, got {type(c.operand).__name__}"
            )


def _check_txn(txn: Txn, budget: int) -> None:
    """Check a txn and its nested txns; `budget` is how many ops it may use."""
    for name in ("compare", "success", "failure"):
        if type(getattr(txn, name)) is not tuple:
            raise InvalidRequest(f"Txn.{name} must be a tuple or list")
    used = max(len(txn.compare), len(txn.success), len(txn.failure))
    if used > budget:
        raise RequestTooLarge(
            f"txn has {used} operations in one list, more than the {budget} allowed "
            "(limit max_txn_ops, shared with enclosing txns); split the transaction"
        )
    for c in txn.compare:
        _check_compare(c)
    for op in txn.success + txn.failure:
        if not _check_op(op, budget - used):
            raise InvalidRequest(
                f"{type(op).__name__} is not allowed inside a Txn; use Put, Range, DeleteRange or Txn"
            )


def _check_grant(op: LeaseGrant) -> None:
    _check_int(op.ttl_ms, "LeaseGrant.ttl_ms", minimum=1)
    if op.ttl_ms > MAX_LEASE_TTL_MS:
        raise InvalidRequest(f"lease TTL {op.ttl_ms / 1000:g} s is longer than the maximum of "
                             f"{MAX_LEASE_TTL_MS // 1000} s")
    _check_int(op.id, "LeaseGrant.id")


def _check_checkpoint(op: LeaseCheckpoint) -> None:
    if type(op.remaining) is not tuple:
        raise InvalidRequest("LeaseCheckpoint.remaining must be a tuple of (id, remaining_ms, epoch)")
    for item in op.remaining:
        if type(item) is not tuple or len(item) != 3:
            raise InvalidRequest("LeaseCheckpoint.remaining must hold (id, remaining_ms, epoch) triples")
        _check_int(item[0], "LeaseCheckpoint lease id", minimum=1)
        _check_int(item[1], "LeaseCheckpoint remaining_ms")
        _check_int(item[2], "LeaseCheckpoint epoch")


def _check_expire(op: LeaseExpire) -> None:
    _check_int(op.id, "LeaseExpire.id", minimum=1)
    _check_int(op.epoch, "LeaseExpire.epoch")


_LEASE_CHECKS = {
    LeaseGrant: _check_grant,
    LeaseRevoke: lambda op: _check_int(op.id, "LeaseRevoke.id", minimum=1),
    LeaseKeepAlive: lambda op: _check_int(op.id, "LeaseKeepAlive.id", minimum=1),
    LeaseCheckpoint: _check_checkpoint,
    LeaseExpire: _check_expire,
}


def _check_op(op: Any, budget: int) -> bool:
    """Check a Put, Range, DeleteRange or Txn (with `budget` ops); False for any other type."""
    t = type(op)
    if t is Put:
        _check_put(op)
    elif t is Range:
        _check_range(op)
    elif t is DeleteRange:
        _check_delete(op)
    elif t is Txn:
        _check_txn(op, budget)
    else:
        return False
    return True


# --- the txn duplicate-key rule ----------------------------------------------
# A key may be written by at most one op of a txn, counting nested txns: two
# puts of one key, or a put of a key that a delete range covers, are refused.
# The success and failure branches of one txn exclude each other, so they may
# write the same keys. Two deletes may overlap.


def _in_intervals(key: bytes, intervals: list[tuple[bytes, bytes | None]]) -> bool:
    for start, end in intervals:
        if start <= key and (end is None or key < end):
            return True
    return False


def _branch_writes(ops: tuple[Any, ...]) -> tuple[set[bytes], list[tuple[bytes, bytes | None]]]:
    """Return (put keys, delete intervals) of a list of txn ops; raise on conflict."""
    puts: set[bytes] = set()
    dels: list[tuple[bytes, bytes | None]] = []
    for op in ops:
        t = type(op)
        if t is Put:
            p, d = {key_bytes(op.key)}, []
        elif t is DeleteRange:
            start, end = range_bounds(op.key, op.range_end)
            if end is None:
                end = start + b"\0"  # the single key `start`
            elif end == b"\0":
                end = None  # no upper bound
            p, d = set(), [(start, end)]
        elif t is Txn:
            p_then, d_then = _branch_writes(op.success)
            p_else, d_else = _branch_writes(op.failure)
            p, d = p_then | p_else, d_then + d_else
        else:
            continue
        if puts & p or any(_in_intervals(k, dels) for k in p) or any(_in_intervals(k, d) for k in puts):
            raise InvalidRequest(DUPLICATE_KEY_MESSAGE)
        puts |= p
        dels += d
    return puts, dels
