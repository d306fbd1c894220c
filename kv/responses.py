"""Responses: what applying a request returns.

Frozen, slotted dataclasses with `to_plain()` / `from_plain()`, like requests.
The state machine remembers results for exactly-once delivery and writes them
into snapshots, so the plain forms (and the tags below) are part of the
snapshot format. `result_to_plain` / `result_from_plain` also carry the typed
errors a command can fail with.

Returned keys have the type of the request's key: str if the request's key was
a str (bytes that are not valid utf-8 stay bytes), bytes if it was bytes.
Values come back with the type they were written with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Union

from kv import errors
from kv.errors import InvalidRequest, RaftKVError

__all__ = [
    "KeyValue",
    "ResponseHeader",
    "PutResponse",
    "RangeResponse",
    "DeleteRangeResponse",
    "TxnResponse",
    "CompactResponse",
    "LeaseGrantResponse",
    "LeaseKeepAliveResponse",
    "LeaseRevokeResponse",
    "LeaseCheckpointResponse",
    "Response",
    "Result",
    "result_to_plain",
    "result_from_plain",
]

TAG_PUT_RESPONSE = 101
TAG_RANGE_RESPONSE = 102
TAG_DELETE_RANGE_RESPONSE = 103
TAG_TXN_RESPONSE = 104
TAG_COMPACT_RESPONSE = 105
TAG_LEASE_GRANT_RESPONSE = 106
TAG_LEASE_KEEPALIVE_RESPONSE = 107
TAG_LEASE_REVOKE_RESPONSE = 108
TAG_LEASE_CHECKPOINT_RESPONSE = 109
TAG_ERROR = 199


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key-value pair as stored at some revision.

    Attributes:
        key: bytes or str (see the module docstring).
        value: as written (bytes or str); empty of the same type for keys_only.
        create_revision: revision of the put that created this incarnation.
        mod_revision: revision of the last write to the key.
        version: writes since creation (1 after the creating put).
        lease: attached lease id, 0 for none.
    """

    key: bytes | str
    value: bytes | str
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    def to_plain(self) -> list[Any]:
        return [self.key, self.value, self.create_revision, self.mod_revision, self.version, self.lease]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> KeyValue:
        if type(plain) is not list or len(plain) != 6:
            raise InvalidRequest("malformed KeyValue")
        return cls(*plain)


@dataclass(frozen=True, slots=True)
class ResponseHeader:
    """Store revision after the request was applied, and the Raft term it was
    applied in (the term of its log entry; for local reads, the caller's term)."""

    revision: int
    raft_term: int

    def to_plain(self) -> list[Any]:
        return [self.revision, self.raft_term]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> ResponseHeader:
        if type(plain) is not list or len(plain) != 2:
            raise InvalidRequest("malformed ResponseHeader")
        return cls(plain[0], plain[1])


def _kv_or_none(plain: Any) -> KeyValue | None:
    return None if plain is None else KeyValue.from_plain(plain)


@dataclass(frozen=True, slots=True)
class PutResponse:
    header: ResponseHeader
    prev_kv: KeyValue | None = None

    TAG: ClassVar[int] = TAG_PUT_RESPONSE

    def to_plain(self) -> list[Any]:
        return [TAG_PUT_RESPONSE, self.header.to_plain(), None if self.prev_kv is None else self.prev_kv.to_plain()]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> PutResponse:
        return cls(ResponseHeader.from_plain(plain[1]), _kv_or_none(plain[2]))


@dataclass(frozen=True, slots=True)
class RangeResponse:
    """kvs: the pairs (after sort and limit); count: how many keys matched in
    total (before limit); more: True if limit left some out."""

    header: ResponseHeader
    kvs: tuple[KeyValue, ...] = ()
    count: int = 0
    more: bool = False

    TAG: ClassVar[int] = TAG_RANGE_RESPONSE

    def to_plain(self) -> list[Any]:
        return [TAG_RANGE_RESPONSE, self.header.to_plain(), [kv.to_plain() for kv in self.kvs], self.count, self.more]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> RangeResponse:
        return cls(
            ResponseHeader.from_plain(plain[1]),
            tuple(KeyValue.from_plain(p) for p in plain[2]),
            plain[3],
            plain[4],
        )


@dataclass(frozen=True, slots=True)
class DeleteRangeResponse:
    """deleted: how many keys were deleted; prev_kvs: them, if prev_kv was asked."""

    header: ResponseHeader
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()

    TAG: ClassVar[int] = TAG_DELETE_RANGE_RESPONSE

    def to_plain(self) -> list[Any]:
        return [TAG_DELETE_RANGE_RESPONSE, self.header.to_plain(), self.deleted, [kv.to_plain() for kv in self.prev_kvs]]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> DeleteRangeResponse:
        return cls(ResponseHeader.from_plain(plain[1]), plain[2], tuple(KeyValue.from_plain(p) for p in plain[3]))


@dataclass(frozen=True, slots=True)
class TxnResponse:
    """succeeded: whether the compares held; responses: one per op of the
    branch that ran, in order (PutResponse, RangeResponse, ... TxnResponse)."""

    header: ResponseHeader
    succeeded: bool
    responses: tuple[Any, ...] = ()

    TAG: ClassVar[int] = TAG_TXN_RESPONSE

    def to_plain(self) -> list[Any]:
        return [TAG_TXN_RESPONSE, self.header.to_plain(), self.succeeded, [r.to_plain() for r in self.responses]]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> TxnResponse:
        return cls(ResponseHeader.from_plain(plain[1]), plain[2], tuple(_response_from_plain(p) for p in plain[3]))


@dataclass(frozen=True, slots=True)
class CompactResponse:
    header: ResponseHeader

    TAG: ClassVar[int] = TAG_COMPACT_RESPONSE

    def to_plain(self) -> list[Any]:
        return [TAG_COMPACT_RESPONSE, self.header.to_plain()]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> CompactResponse:
        return cls(ResponseHeader.from_plain(plain[1]))


@dataclass(frozen=True, slots=True)
class LeaseGrantResponse:
    """A new lease: its id and granted TTL (the minimum may have raised it)."""

    header: ResponseHeader
    id: int
    ttl_ms: int

    TAG: ClassVar[int] = TAG_LEASE_GRANT_RESPONSE

    def to_plain(self) -> list[Any]:
        return [TAG_LEASE_GRANT_RESPONSE, self.header.to_plain(), self.id, self.ttl_ms]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> LeaseGrantResponse:
        return cls(ResponseHeader.from_plain(plain[1]), plain[2], plain[3])


@dataclass(frozen=True, slots=True)
class LeaseKeepAliveResponse:
    """A renewed lease: it lives `ttl_ms` from the leader's apply of the renewal."""

    header: ResponseHeader
    id: int
    ttl_ms: int

    TAG: ClassVar[int] = TAG_LEASE_KEEPALIVE_RESPONSE

    def to_plain(self) -> list[Any]:
        return [TAG_LEASE_KEEPALIVE_RESPONSE, self.header.to_plain(), self.id, self.ttl_ms]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> LeaseKeepAliveResponse:
        return cls(ResponseHeader.from_plain(plain[1]), plain[2], plain[3])


@dataclass(frozen=True, slots=True)
class LeaseRevokeResponse:
    """A lease that ended (revoked or expired) and how many keys went with it."""

    header: ResponseHeader
    id: int
    deleted: int

    TAG: ClassVar[int] = TAG_LEASE_REVOKE_RESPONSE

    def to_plain(self) -> list[Any]:
        return [TAG_LEASE_REVOKE_RESPONSE, self.header.to_plain(), self.id, self.deleted]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> LeaseRevokeResponse:
        return cls(ResponseHeader.from_plain(plain[1]), plain[2], plain[3])


@dataclass(frozen=True, slots=True)
class LeaseCheckpointResponse:
    """How many of the checkpointed leases still existed."""

    header: ResponseHeader
    updated: int

    TAG: ClassVar[int] = TAG_LEASE_CHECKPOINT_RESPONSE

    def to_plain(self) -> list[Any]:
        return [TAG_LEASE_CHECKPOINT_RESPONSE, self.header.to_plain(), self.updated]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> LeaseCheckpointResponse:
        return cls(ResponseHeader.from_plain(plain[1]), plain[2])


Response = Union[PutResponse, RangeResponse, DeleteRangeResponse, TxnResponse, CompactResponse,
                 LeaseGrantResponse, LeaseKeepAliveResponse, LeaseRevokeResponse, LeaseCheckpointResponse]
Result = Union[Response, RaftKVError]

RESPONSE_TYPES: dict[int, type] = {
    TAG_PUT_RESPONSE: PutResponse,
    TAG_RANGE_RESPONSE: RangeResponse,
    TAG_DELETE_RANGE_RESPONSE: DeleteRangeResponse,
    TAG_TXN_RESPONSE: TxnResponse,
    TAG_COMPACT_RESPONSE: CompactResponse,
    TAG_LEASE_GRANT_RESPONSE: LeaseGrantResponse,
    TAG_LEASE_KEEPALIVE_RESPONSE: LeaseKeepAliveResponse,
    TAG_LEASE_REVOKE_RESPONSE: LeaseRevokeResponse,
    TAG_LEASE_CHECKPOINT_RESPONSE: LeaseCheckpointResponse,
}


def _response_from_plain(plain: Any) -> Any:
    cls = RESPONSE_TYPES.get(plain[0])
    if cls is None:
        raise InvalidRequest(f"unknown response tag {plain[0]!r}")
    return cls.from_plain(plain)


def result_to_plain(result: Any) -> list[Any]:
    """The plain form of a response or of a RaftKVError instance.

    An error keeps its class name, message and instance attributes (such as
    Compacted.compact_revision), which must be plain values.
    """
    if isinstance(result, RaftKVError):
        return [TAG_ERROR, type(result).__name__, str(result), dict(vars(result))]
    return result.to_plain()


def result_from_plain(plain: Any) -> Any:
    """Inverse of `result_to_plain`.

    An error whose class is unknown here comes back as a plain RaftKVError
    carrying the same message.

    Raises:
        InvalidRequest: plain is not a result's plain form.
    """
    try:
        if plain[0] == TAG_ERROR:
            cls = getattr(errors, plain[1], None)
            if not (isinstance(cls, type) and issubclass(cls, RaftKVError)):
                cls = RaftKVError
            exc = cls.__new__(cls)
            Exception.__init__(exc, plain[2])
            exc.__dict__.update(plain[3])
            return exc
        return _response_from_plain(plain)
    except InvalidRequest:
        raise
    except (TypeError, IndexError, KeyError, ValueError) as exc:
        raise InvalidRequest(f"malformed result: {exc}") from None
