"""Raft replicas: the sans-IO core, the durable log, membership, and the Ray actors."""

from raft_actors.backup import BackupInfo, read_backup, restore_cluster
from raft_actors.cluster import Cluster, ClusterExists, get_cluster, start_cluster
from raft_actors.core import Config, RaftCore, Role
from raft_actors.membership import ConfChange, ConfChangeNotLeader, ConfChangeRefused, Membership, decode_conf_entry
from raft_actors.node import NodeOptions
from raft_actors.storage import LogStorage, MemoryStorage
from raft_actors.types import (
    NONE,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    PersistedState,
    Ready,
    ReadState,
    SnapshotMeta,
)

__all__ = [
    "Cluster", "ClusterExists", "NodeOptions", "get_cluster", "start_cluster",
    "BackupInfo", "read_backup", "restore_cluster",
    "ConfChange", "ConfChangeNotLeader", "ConfChangeRefused", "Membership", "decode_conf_entry",
    "NONE", "Config", "Entry", "EntryKind", "HardState", "LogStorage", "MemoryStorage", "Message",
    "MessageType", "PersistedState", "RaftCore", "ReadState", "Ready", "Role", "SnapshotMeta",
]
