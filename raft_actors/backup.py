"""Backups: one file holding a consistent state machine snapshot, and a new
cluster started from it.

File format (version 1), little-endian:

    magic      8 bytes  b"RAFTKVBK"
    version    u16      1
    index      u64      the log index the snapshot covers
    term       u64      the term of that entry
    revision   u64      the store revision (for people and tools)
    length     u64      bytes of snapshot data
    data_crc   u32      CRC32C of the data
    header_crc u32      CRC32C of everything above
    data                the state machine snapshot (`KVStateMachine.snapshot()`)

Written atomically (temporary file, fsync, rename, fsync of the directory).
Nothing in it is pickled: the data is the state machine's own plain encoding.

`restore_cluster` gives every replica of a new cluster the snapshot as its
starting point (log empty after it, current term = the snapshot's term), then
starts the cluster: the data is back, at the same revision, with the same
leases (their remaining TTLs as last checkpointed) and client sessions.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import crc32c
import structlog

from kv.errors import ClusterExists, CorruptLog, InvalidRequest

log = structlog.get_logger(__name__)

__all__ = ["BackupInfo", "write_backup", "read_backup", "restore_cluster"]

_MAGIC = b"RAFTKVBK"
_VERSION = 1
_HEADER = struct.Struct("<8sHQQQQI")
_U32 = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """What a backup file holds: its path, log position, store revision and size."""

    path: str
    index: int
    term: int
    revision: int
    size: int


def write_backup(path: str | os.PathLike, index: int, term: int, revision: int, data: bytes) -> BackupInfo:
    """Write a backup file atomically. Raises OSError on a write failure."""
    target = Path(path)
    header = _HEADER.pack(_MAGIC, _VERSION, index, term, revision, len(data), crc32c.crc32c(data))
    header += _U32.pack(crc32c.crc32c(header))
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, header)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    dfd = os.open(target.parent or ".", os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return BackupInfo(str(target), index, term, revision, len(data))


def read_backup(path: str | os.PathLike) -> tuple[BackupInfo, bytes]:
    """Read and check a backup file.

    Raises:
        InvalidRequest: no such file.
        CorruptLog: not a backup, an unknown version, or a checksum mismatch.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise InvalidRequest(f"no backup file at {p}") from None
    size = _HEADER.size + _U32.size
    if len(raw) < size or raw[:8] != _MAGIC:
        raise CorruptLog(f"{p} is not a raftkv backup (bad magic)", str(p), 0)
    fields = _HEADER.unpack_from(raw)
    (header_crc,) = _U32.unpack_from(raw, _HEADER.size)
    if crc32c.crc32c(raw[: _HEADER.size]) != header_crc:
        raise CorruptLog(f"{p}: backup header fails its checksum", str(p), 0)
    _, version, index, term, revision, length, data_crc = fields
    if version != _VERSION:
        raise CorruptLog(f"{p}: backup format {version} is not one this version reads ({_VERSION})", str(p), 8)
    data = raw[size:]
    if len(data) != length or crc32c.crc32c(data) != data_crc:
        raise CorruptLog(f"{p}: backup data is truncated or fails its checksum", str(p), size)
    return BackupInfo(str(p), index, term, revision, length), data


def restore_cluster(path: str | os.PathLike, name: str, replicas: int = 3, data_dir: str | None = None,
                    **start_options):
    """Start a new cluster `name` whose state is the backup at `path`.

    Args:
        path: a file written by `client.snapshot(path)`.
        name: the new cluster's name.
        replicas: how many replicas.
        data_dir: where the new replicas keep their logs; must not hold a
            cluster already (default: <tmp>/raftkv/<name>).
        start_options: passed to `start_cluster` (detached, namespace, options).
    Returns:
        The Cluster.
    Raises:
        InvalidRequest: no backup there, or bad arguments.
        CorruptLog: the backup fails its checks.
        ClusterExists: `data_dir` already holds replica data.
    """
    from kv import KVStateMachine
    from raft_actors.cluster import _check_name, _local_indices, default_data_dir, start_cluster
    from raft_actors.types import HardState, SnapshotMeta
    from raft_actors.wal import FileStorage

    _check_name(name)
    info, data = read_backup(path)
    KVStateMachine().restore(data)  # refuse a backup the state machine cannot read, before touching disk
    root = os.path.abspath(data_dir or default_data_dir(name))
    # Any replica directory there (not only 0..replicas-1: a cluster that
    # changed its membership has others) would be mixed with the restored one.
    for i in sorted(_local_indices(root) | set(range(replicas))):
        d = os.path.join(root, f"replica-{i}")
        if os.path.exists(d) and os.listdir(d):
            raise ClusterExists(f"{d} already holds replica data; restore into an empty data_dir")
    for i in range(replicas):
        storage = FileStorage(os.path.join(root, f"replica-{i}"))
        try:
            storage.load()
            storage.save_snapshot(SnapshotMeta(info.index, info.term), data)
            storage.set_hard_state(HardState(info.term, 0, info.index))  # terms go on from the backup's
            storage.sync()
        finally:
            storage.close()
    log.info("backup.restored", cluster=name, path=str(path), index=info.index, revision=info.revision)
    return start_cluster(name, replicas, root, **start_options)
