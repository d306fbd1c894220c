"""Requests: what a client asks the key-value store to do.

Each request is a frozen, slotted dataclass with `to_plain()` and a
`from_plain()` classmethod. The plain form is a list whose first item is a
small integer tag naming the request type; it is what goes into the Raft log
(through `kv.codec`), so tags and field order are part of the log format:
append fields at the end, never reorder or reuse a tag.

Keys and values are `bytes | str`. Keys are compared as bytes (a str key is
its utf-8 encoding), so ordering is bytewise as in etcd. Range conventions
follow etcd: `range_end=None` names the single key `key`; `range_end=b"\\0"`
names every key >= `key`; `key=b"\\0", range_end=b"\\0"` names every key; and
`prefix_end(p)` is the range end that selects every key starting with `p`.

Validation (types, limits, the txn duplicate-key rule) lives in
`kv.validation`; constructing a request does not validate it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Union

from kv.errors import InvalidRequest

__all__ = [
    "Key",
    "Value",
    "SortOrder",
    "SortTarget",
    "CompareTarget",
    "CompareOp",
    "SORT_ORDERS",
    "SORT_TARGETS",
    "COMPARE_TARGETS",
    "COMPARE_OPS",
    "Put",
    "Range",
    "DeleteRange",
    "Compare",
    "Txn",
    "Compact",
    "LeaseGrant",
    "LeaseRevoke",
    "LeaseKeepAlive",
    "LeaseCheckpoint",
    "LeaseExpire",
    "LEADER_ONLY_OPS",
    "MAX_LEASE_TTL_MS",
    "Op",
    "TxnOp",
    "op_from_plain",
    "prefix_end",
    "key_bytes",
]

Key = Union[bytes, str]
Value = Union[bytes, str]
SortOrder = Literal["none", "ascend", "descend"]
SortTarget = Literal["key", "version", "create", "mod", "value"]
CompareTarget = Literal["value", "version", "create", "mod", "lease"]
CompareOp = Literal["==", "!=", "<", ">"]

SORT_ORDERS: tuple[str, ...] = ("none", "ascend", "descend")
SORT_TARGETS: tuple[str, ...] = ("key", "version", "create", "mod", "value")
COMPARE_TARGETS: tuple[str, ...] = ("value", "version", "create", "mod", "lease")
COMPARE_OPS: tuple[str, ...] = ("==", "!=", "<", ">")

# Plain-form tags. Part of the log format: never change or reuse one.
TAG_PUT = 1
TAG_RANGE = 2
TAG_DELETE_RANGE = 3
TAG_TXN = 4
TAG_COMPACT = 5
TAG_COMPARE = 6
TAG_LEASE_GRANT = 7
TAG_LEASE_REVOKE = 8
TAG_LEASE_KEEPALIVE = 9
TAG_LEASE_CHECKPOINT = 10
TAG_LEASE_EXPIRE = 11

MAX_LEASE_TTL_MS = 365 * 24 * 3600 * 1000  # a year


def key_bytes(key: Key) -> bytes:
    """The stored (bytes) form of a key: str keys are utf-8 encoded.

    Raises:
        InvalidRequest: key is neither bytes nor str, or is a str that cannot
            be utf-8 encoded (lone surrogates).
    """
    if type(key) is bytes:
        return key
    if isinstance(key, str):
        try:
            return key.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest("key is not valid unicode (lone surrogate); use bytes") from None
    if isinstance(key, bytes):
        return bytes(key)
    raise InvalidRequest(f"keys must be bytes or str, got {type(key).__name__}")


def prefix_end(prefix: Key) -> bytes:
    """The range end that, with `key=prefix`, selects every key starting with prefix.

    The last byte that is not 0xff is incremented and everything after it is
    dropped; a prefix of only 0xff bytes (or empty) gives b"\\0", which means
    "no upper bound".

    Args:
        prefix: the key prefix (bytes, or str encoded as utf-8).

    Returns:
        The exclusive range end as bytes.
    """
    p = key_bytes(prefix)
    for i in range(len(p) - 1, -1, -1):
        if p[i] < 0xFF:
            return p[:i] + bytes((p[i] + 1,))
    return b"\0"


@dataclass(frozen=True, slots=True)
class Put:
    """Set `key` to `value`, creating the key if needed. One revision.

    Attributes:
        key, value: bytes or str; the value is returned with the type given here.
        lease: lease id to attach (0 for none); the lease must exist, and the
            key is deleted when the lease expires or is revoked.
        prev_kv: return the key-value pair as it was before this put.
        ignore_value: keep the current value (value must be empty); fails with
            KeyNotFound if the key does not exist.
        ignore_lease: keep the current lease (lease must be 0); fails with
            KeyNotFound if the key does not exist.
    """

    key: Key
    value: Value
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False

    TAG: ClassVar[int] = TAG_PUT

    def to_plain(self) -> list[Any]:
        return [TAG_PUT, self.key, self.value, self.lease, self.prev_kv, self.ignore_value, self.ignore_lease]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> Put:
        _check_shape(plain, TAG_PUT, 7, "Put")
        return cls(plain[1], plain[2], plain[3], plain[4], plain[5], plain[6])


@dataclass(frozen=True, slots=True)
class Range:
    """Read the keys in [key, range_end) (or the single key if range_end is None).

    Attributes:
        key, range_end: see the module docstring for the conventions.
        limit: return at most this many pairs (0: no limit).
        revision: read the store as of this revision (0: current).
        sort_order: 'none', 'ascend' or 'descend'.
        sort_target: 'key', 'version', 'create', 'mod' or 'value'.
        keys_only: return keys without values (values come back empty).
        count_only: return only the count.
    """

    key: Key
    range_end: Key | None = None
    limit: int = 0
    revision: int = 0
    sort_order: SortOrder = "none"
    sort_target: SortTarget = "key"
    keys_only: bool = False
    count_only: bool = False

    TAG: ClassVar[int] = TAG_RANGE

    def to_plain(self) -> list[Any]:
        return [
            TAG_RANGE,
            self.key,
            self.range_end,
            self.limit,
            self.revision,
            self.sort_order,
            self.sort_target,
            self.keys_only,
            self.count_only,
        ]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> Range:
        _check_shape(plain, TAG_RANGE, 9, "Range")
        return cls(*plain[1:9])


@dataclass(frozen=True, slots=True)
class DeleteRange:
    """Delete the keys in [key, range_end) (or the single key). One revision if
    anything was deleted, none otherwise.

    Attributes:
        key, range_end: as for Range.
        prev_kv: return the deleted key-value pairs.
    """

    key: Key
    range_end: Key | None = None
    prev_kv: bool = False

    TAG: ClassVar[int] = TAG_DELETE_RANGE

    def to_plain(self) -> list[Any]:
        return [TAG_DELETE_RANGE, self.key, self.range_end, self.prev_kv]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> DeleteRange:
        _check_shape(plain, TAG_DELETE_RANGE, 4, "DeleteRange")
        return cls(plain[1], plain[2], plain[3])


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a Txn: `<target of key> <op> <operand>`.

    With `range_end`, every existing key of the range must satisfy it. A key
    that does not exist has version, create, mod and lease 0; a value compare
    on a key (or range) with no existing key is always false, whatever the op.

    Attributes:
        key: the key (bytes or str).
        target: 'value', 'version', 'create', 'mod' or 'lease'.
        op: '==', '!=', '<' or '>'.
        operand: bytes or str for 'value' (compared as bytes), int otherwise.
        range_end: optional range end, conventions as for Range.
    """

    key: Key
    target: CompareTarget
    op: CompareOp
    operand: Any
    range_end: Key | None = None

    TAG: ClassVar[int] = TAG_COMPARE

    def to_plain(self) -> list[Any]:
        return [TAG_COMPARE, self.key, self.target, self.op, self.operand, self.range_end]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> Compare:
        _check_shape(plain, TAG_COMPARE, 6, "Compare")
        return cls(plain[1], plain[2], plain[3], plain[4], plain[5])


@dataclass(frozen=True, slots=True)
class Txn:
    """If every compare holds, run `success`, else run `failure`; atomically,
    as one revision (none if nothing was written).

    All compares, including those of nested txns, are evaluated against the
    store as it was before the txn started (as etcd does). Ops run in order,
    and a Range inside the txn sees the writes made before it in the txn.
    No key may be written twice in a txn, nor put and deleted (checked across
    nested txns, before anything runs, whichever branch would be taken).

    Attributes:
        compare: conditions, all of which must hold (empty: always true).
        success, failure: ops (Put, Range, DeleteRange or nested Txn).
    """

    compare: tuple[Compare, ...] = ()
    success: tuple[TxnOp, ...] = ()
    failure: tuple[TxnOp, ...] = ()

    TAG: ClassVar[int] = TAG_TXN

    def __post_init__(self) -> None:
        # Accept lists from callers; keep the stored form immutable.
        for name in ("compare", "success", "failure"):
            value = getattr(self, name)
            if type(value) is not tuple:
                object.__setattr__(self, name, tuple(value))

    def to_plain(self) -> list[Any]:
        return [
            TAG_TXN,
            [c.to_plain() for c in self.compare],
            [op.to_plain() for op in self.success],
            [op.to_plain() for op in self.failure],
        ]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> Txn:
        _check_shape(plain, TAG_TXN, 4, "Txn")
        for part in plain[1:4]:
            if type(part) is not list:
                raise InvalidRequest("malformed Txn: compare, success and failure must be lists")
        return cls(
            tuple(Compare.from_plain(c) for c in plain[1]),
            tuple(_txn_op_from_plain(p) for p in plain[2]),
            tuple(_txn_op_from_plain(p) for p in plain[3]),
        )


@dataclass(frozen=True, slots=True)
class Compact:
    """Discard history below `revision`: reads at older revisions fail with
    Compacted afterwards. Not allowed inside a Txn.
    """

    revision: int

    TAG: ClassVar[int] = TAG_COMPACT

    def to_plain(self) -> list[Any]:
        return [TAG_COMPACT, self.revision]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> Compact:
        _check_shape(plain, TAG_COMPACT, 2, "Compact")
        return cls(plain[1])


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """Create a lease of `ttl_ms` milliseconds.

    Attributes:
        ttl_ms: the time to live; the leader raises it to its minimum (longer
            than an election) before proposing.
        id: the lease id wanted, or 0 to let the cluster pick one.
    """

    ttl_ms: int
    id: int = 0

    TAG: ClassVar[int] = TAG_LEASE_GRANT

    def to_plain(self) -> list[Any]:
        return [TAG_LEASE_GRANT, self.ttl_ms, self.id]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> LeaseGrant:
        _check_shape(plain, TAG_LEASE_GRANT, 3, "LeaseGrant")
        return cls(plain[1], plain[2])


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    """End a lease now and delete every key attached to it (one revision)."""

    id: int

    TAG: ClassVar[int] = TAG_LEASE_REVOKE

    def to_plain(self) -> list[Any]:
        return [TAG_LEASE_REVOKE, self.id]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> LeaseRevoke:
        _check_shape(plain, TAG_LEASE_REVOKE, 2, "LeaseRevoke")
        return cls(plain[1])


@dataclass(frozen=True, slots=True)
class LeaseKeepAlive:
    """Renew a lease: its time to live starts again from its granted TTL."""

    id: int

    TAG: ClassVar[int] = TAG_LEASE_KEEPALIVE

    def to_plain(self) -> list[Any]:
        return [TAG_LEASE_KEEPALIVE, self.id]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> LeaseKeepAlive:
        _check_shape(plain, TAG_LEASE_KEEPALIVE, 2, "LeaseKeepAlive")
        return cls(plain[1])


@dataclass(frozen=True, slots=True)
class LeaseCheckpoint:
    """Leader only: record how long each lease has left, as the leader's
    monotonic clock sees it, so a new leader neither renews nor shortens it.

    Attributes:
        remaining: (lease id, remaining milliseconds, epoch) triples; a
            lease renewed since the leader read its epoch is left alone (the
            renewal is newer than the checkpoint computed before it).
    """

    remaining: tuple[tuple[int, int, int], ...]

    TAG: ClassVar[int] = TAG_LEASE_CHECKPOINT

    def to_plain(self) -> list[Any]:
        return [TAG_LEASE_CHECKPOINT, [list(p) for p in self.remaining]]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> LeaseCheckpoint:
        _check_shape(plain, TAG_LEASE_CHECKPOINT, 2, "LeaseCheckpoint")
        if type(plain[1]) is not list or any(type(p) is not list or len(p) != 3 for p in plain[1]):
            raise InvalidRequest("malformed LeaseCheckpoint: expected a list of [id, remaining_ms, epoch]")
        return cls(tuple((p[0], p[1], p[2]) for p in plain[1]))


@dataclass(frozen=True, slots=True)
class LeaseExpire:
    """Leader only: the leader's clock says lease `id` ran out. Applied as a
    revoke unless the lease was renewed after the leader decided (its
    `epoch`, the log index of its last grant or renewal, differs)."""

    id: int
    epoch: int

    TAG: ClassVar[int] = TAG_LEASE_EXPIRE

    def to_plain(self) -> list[Any]:
        return [TAG_LEASE_EXPIRE, self.id, self.epoch]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> LeaseExpire:
        _check_shape(plain, TAG_LEASE_EXPIRE, 3, "LeaseExpire")
        return cls(plain[1], plain[2])


TxnOp = Union[Put, Range, DeleteRange, Txn]
Op = Union[Put, Range, DeleteRange, Txn, Compact, LeaseGrant, LeaseRevoke, LeaseKeepAlive]

# Requests only a leader proposes (time enters the log through them); a
# client submitting one is refused.
LEADER_ONLY_OPS = (LeaseCheckpoint, LeaseExpire)

# tag -> request class. Locks and elections are recipes over Put/Txn and need none.
OP_TYPES: dict[int, type] = {
    TAG_PUT: Put,
    TAG_RANGE: Range,
    TAG_DELETE_RANGE: DeleteRange,
    TAG_TXN: Txn,
    TAG_COMPACT: Compact,
    TAG_LEASE_GRANT: LeaseGrant,
    TAG_LEASE_REVOKE: LeaseRevoke,
    TAG_LEASE_KEEPALIVE: LeaseKeepAlive,
    TAG_LEASE_CHECKPOINT: LeaseCheckpoint,
    TAG_LEASE_EXPIRE: LeaseExpire,
}
_TXN_OP_TYPES = (Put, Range, DeleteRange, Txn)


def op_from_plain(plain: Any) -> Any:
    """Rebuild a request from its plain form.

    Raises:
        InvalidRequest: plain is not the plain form of a known request.
    """
    if type(plain) is not list or not plain:
        raise InvalidRequest("malformed request: expected a non-empty list")
    cls = OP_TYPES.get(plain[0]) if type(plain[0]) is int else None
    if cls is None:
        raise InvalidRequest(f"unknown request tag {plain[0]!r}; is this replica older than the proposer?")
    return cls.from_plain(plain)


def _txn_op_from_plain(plain: Any) -> TxnOp:
    op = op_from_plain(plain)
    if not isinstance(op, _TXN_OP_TYPES):
        raise InvalidRequest(f"{type(op).__name__} is not allowed inside a Txn")
    return op


def _check_shape(plain: Any, tag: int, length: int, name: str) -> None:
    if type(plain) is not list or len(plain) != length or plain[0] != tag:
        raise InvalidRequest(f"malformed {name}: expected a list of {length} items starting with tag {tag}")
