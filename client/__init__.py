"""The raftkv user API: `connect(name)` and the request types for transactions."""

from client.client import Client, connect
from kv import Compare, DeleteRange, KeyValue, Put, Range, Txn, prefix_end
from kv.errors import (
    ClientClosed,
    ClusterExists,
    ClusterNotFound,
    CorruptLog,
    Compacted,
    CompareFailed,
    InvalidRequest,
    LeaseNotFound,
    NotLeader,
    RaftKVError,
    RequestTooLarge,
    StorageError,
    Unavailable,
)

__all__ = [
    "Client", "ClientClosed", "ClusterExists", "ClusterNotFound", "CorruptLog", "StorageError", "Compacted", "Compare", "CompareFailed", "DeleteRange",
    "InvalidRequest", "KeyValue", "LeaseNotFound", "NotLeader", "Put", "RaftKVError", "Range", "RequestTooLarge", "Txn",
    "Unavailable", "connect", "prefix_end",
]
