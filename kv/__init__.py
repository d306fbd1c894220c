"""raftkv's deterministic state machine: everything applied from the Raft log.

Modules, one concept each:
    codec          plain values <-> versioned tagged bytes (never pickle)
    requests       Put, Range, DeleteRange, Txn, Compare, Compact
    responses      KeyValue, ResponseHeader and the response types
    limits         Limits (sizes, counts, session bounds)
    validation     validate(op, limits)
    mvcc           MVCCStore: revisions, history, compaction, events
    sessions       SessionTable: exactly-once client sessions
    batch          Command, encode_batch, decode_batch: a log entry's commands
    state_machine  KVStateMachine: apply, read, snapshot, restore
"""

from kv.codec import decode, encode
from kv.errors import (
    CodecError,
    Compacted,
    CompareFailed,
    FutureRevision,
    InvalidRequest,
    KeyNotFound,
    RaftKVError,
    RequestTooLarge,
    SessionExpired,
    StaleRequest,
)
from kv.limits import DEFAULT_LIMITS, Limits
from kv.mvcc import Event, MVCCStore
from kv.requests import Compact, Compare, DeleteRange, Op, Put, Range, Txn, TxnOp, prefix_end
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
from kv.sessions import SessionTable
from kv.state_machine import Command, KVStateMachine, decode_batch, encode_batch
from kv.validation import validate

__all__ = [
    # codec
    "encode",
    "decode",
    # requests
    "Put",
    "Range",
    "DeleteRange",
    "Txn",
    "Compare",
    "Compact",
    "Op",
    "TxnOp",
    "prefix_end",
    # responses
    "KeyValue",
    "ResponseHeader",
    "PutResponse",
    "RangeResponse",
    "DeleteRangeResponse",
    "TxnResponse",
    "CompactResponse",
    "result_to_plain",
    "result_from_plain",
    # limits and validation
    "Limits",
    "DEFAULT_LIMITS",
    "validate",
    # store, sessions, state machine
    "MVCCStore",
    "Event",
    "SessionTable",
    "KVStateMachine",
    "Command",
    "encode_batch",
    "decode_batch",
    # errors raised or returned by this package
    "RaftKVError",
    "InvalidRequest",
    "RequestTooLarge",
    "CodecError",
    "Compacted",
    "FutureRevision",
    "KeyNotFound",
    "StaleRequest",
    "SessionExpired",
    "CompareFailed",
]
