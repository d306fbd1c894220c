"""The raftkv user API: `connect(name)` and the request types for transactions."""

from client.client import Client, TxnBuilder, connect
from client.elected import LeaderElected, leader_only
from client.election import Election
from client.leases import Lease, LeaseStatus, Session
from client.lock import Lock
from kv import Compare, DeleteRange, KeyValue, Put, Range, Txn, prefix_end
from kv.errors import (
    ClientClosed,
    ClusterExists,
    ClusterNotFound,
    CorruptLog,
    Compacted,
    CompareFailed,
    InvalidRequest,
    LeaseExists,
    LeaseNotFound,
    LockNotHeld,
    LockTimeout,
    NotElectionLeader,
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
    "TxnBuilder", "Lease", "LeaseStatus", "Session", "Lock", "Election", "LeaderElected", "leader_only",
    "LeaseExists", "LockNotHeld", "LockTimeout", "NotElectionLeader",
]
