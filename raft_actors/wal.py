"""The durable Raft log: segment files of checksummed records, plus two small state files.

Theory of operation
-------------------
Layout of ``data_dir``::

    wal/0000000000000001.seg   segments, named by the index of their first entry
    wal/0000000000052318.seg   (zero padded to 16 digits: name order is index order)
    hardstate                  term, vote, commit
    snapmeta                   index, term and configuration of the snapshot covering the log's prefix
    snapshot-0000000000052000.snap   the state machine snapshot (only the newest is kept)

A segment is a 24-byte header (magic, format version, first index, CRC32C of the
header) followed by records. A record is, little-endian::

    crc32c u32 | data length u32 | term u64 | index u64 | kind u8 | data

where the CRC covers everything after itself. ``hardstate`` is one fixed
struct (magic, version, term, vote, commit, CRC32C). Segments and
``hardstate`` are format version 1 (`FORMAT_VERSION`).

The snapshot files are format version 2 (`SNAPSHOT_FORMAT_VERSION`), which
adds the configuration (voters and learners) at the snapshot's index, in the
encoding of `raft_actors.membership.Membership.encode`; a conf length of 0
means "not recorded". ``snapmeta``::

    magic 8s | version u32 | index u64 | term u64 | conf length u32 | conf | crc32c u32

and a snapshot file is a header, then the application's snapshot data::

    magic 8s | version u32 | index u64 | term u64 | data length u64 | data crc32c u32
        | conf length u32 | conf | header crc32c u32 | data

Version 1 of both (the same without the conf length and conf: a 28-byte
``snapmeta``, a 44-byte snapshot header) is still read, as "configuration
not recorded"; only version 2 is written.

Nothing read from disk is unpickled.

Writing is group commit. ``append`` packs a batch into one ``pwrite`` on the last
segment; ``set_hard_state`` and ``compact`` only remember. ``sync`` then makes all
of it durable in an order that leaves every crash state loadable:

1. the snapshot position (atomic replace), so the entries it covers may vanish;
2. one ``fdatasync`` of the last segment;
3. the hard state (atomic replace), after the entries its commit refers to;
4. deletion of segments wholly covered by the snapshot, then a directory fsync.

Two rare steps are made durable at once, because they change what earlier bytes
mean. Starting a segment first syncs the previous one, so only the last segment
can ever have a torn tail. Overwriting a suffix deletes later segments and cuts
the segment holding the first overwritten entry (with fsyncs) before the new
entries are written, so stale entries never reappear behind new ones.

``save_snapshot`` is durable when it returns. The snapshot file is written
atomically (temp file, fsync, rename, directory fsync); from then on it is the
snapshot. If the log's entry at the snapshot's index has the snapshot's term,
``snapmeta`` is replaced and the covered segments deleted, keeping the tail.
Otherwise (a follower installing a leader's snapshot) every segment is deleted,
newest first, each deletion made durable, and only then is ``snapmeta``
replaced; older snapshot files go last. So a crash leaves at most one snapshot
file newer than ``snapmeta``, next to a prefix of the old log: ``load`` then
applies the same rule to that log and finishes the job.

Recovery (``load``) reads every segment not wholly covered by the snapshot. An
incomplete or checksum-failing record at the end of the last segment, with no
valid record after it, is what a crash during an unsynced write leaves: it is cut
off, with a warning. Any other damage (including a snapshot file failing its
header or data checks) raises ``CorruptLog`` naming the file and byte offset,
and then nothing on disk is changed.
"""

from __future__ import annotations

import bisect
import fcntl
import os
import re
import struct
import time
from array import array
from pathlib import Path
from typing import Sequence

import crc32c
import structlog

from kv.errors import CorruptLog, StorageError
from raft_actors.membership import Membership
from raft_actors.storage import tail_after_snapshot
from raft_actors.types import Entry, EntryKind, HardState, PersistedState, SnapshotMeta

__all__ = ["FileStorage", "FORMAT_VERSION", "SNAPSHOT_FORMAT_VERSION"]

log = structlog.get_logger(__name__)

FORMAT_VERSION = 1  # segments and hardstate
SNAPSHOT_FORMAT_VERSION = 2  # snapmeta and snapshot files (1 is still read)
_SEG_MAGIC = b"RKVWAL\x00\x00"
_HS_MAGIC = b"RKVHARD\x00"
_SNAP_MAGIC = b"RKVSNAP\x00"
_SEG_HEADER = struct.Struct("<8sIQ")  # magic, version, first index; then u32 crc
_SEG_HEADER_SIZE = _SEG_HEADER.size + 4
_REC_BODY = struct.Struct("<IQQB")  # data length, term, index, kind
_REC_HEADER = struct.Struct("<IIQQB")  # crc, then the body's fixed part
_REC_HEADER_SIZE = _REC_HEADER.size
_HS = struct.Struct("<8sIQQQ")  # magic, version, term, vote, commit; then u32 crc
_SNAP = struct.Struct("<8sIQQ")  # magic, version, index, term; then (v2) u32 conf length, conf; then u32 crc
_SNAPFILE_MAGIC = b"RKVSNAPD"
_SNAPFILE = struct.Struct("<8sIQQQI")  # magic, version, index, term, data length, data crc; then (v2) conf; u32 crc
_SNAPFILE_HEADER_SIZE_V1 = _SNAPFILE.size + 4
_SNAPFILE_NAME = re.compile(r"^snapshot-(\d{16})\.snap$")
_U32 = struct.Struct("<I")
_SEG_NAME = re.compile(r"^(\d{16})\.seg$")
_KINDS = {int(kind): kind for kind in EntryKind}
_RESTORE = "restore the data directory from a backup, or remove this replica and rejoin it as a new member"


class _Segment:
    """One segment file: where each of its records starts, and its size."""

    __slots__ = ("path", "first", "offsets", "size", "fd")

    def __init__(self, path: Path, first: int, offsets: array, size: int, fd: int | None = None) -> None:
        self.path = path
        self.first = first
        self.offsets = offsets  # offsets[k]: byte offset of the record of entry first + k
        self.size = size  # invariant: size == end of the last whole record written
        self.fd = fd  # open only while this is the last segment (or being cut)

    @property
    def last(self) -> int:
        return self.first + len(self.offsets) - 1


class FileStorage:
    """`LogStorage` on local files: segmented WAL with CRC32C records, group commit.

    Consistency: nothing is durable until `sync()` returns; after it returns, every
    earlier call survives a crash. A crash before that leaves a state that `load()`
    accepts: the last synced state, possibly with a prefix of later appends.
    One `FileStorage` per data directory, used from one thread.
    """

    def __init__(self, data_dir: str | Path, segment_bytes: int = 64 * 1024 * 1024,
                 lock_timeout: float = 10.0) -> None:
        """Describe the storage; nothing touches disk until `load()`.

        Args:
            data_dir: directory of this replica (created by `load()` if missing).
            segment_bytes: a segment is closed once it reaches this size; a
                record is never split, so segments may exceed it by one record.
            lock_timeout: how long `load()` waits for another process to
                release the directory before raising StorageError.

        Raises:
            ValueError: segment_bytes is not positive.
        """
        if segment_bytes <= 0:
            raise ValueError(f"segment_bytes must be positive, got {segment_bytes}")
        self.data_dir = Path(data_dir)
        self.wal_dir = self.data_dir / "wal"
        self.segment_bytes = segment_bytes
        self.syncs = 0
        self._segs: list[_Segment] = []
        self._covered: list[Path] = []  # segments found wholly below the snapshot
        self._snap = self._snap_durable = SnapshotMeta()
        self._snap_file = 0  # index of the snapshot file whose data goes with _snap (0: none)
        self._prepared: tuple[SnapshotMeta, int] | None = None  # (meta, size) written by prepare_snapshot
        self._hs = self._hs_durable = HardState()
        self._last = 0  # invariant: _last == max(_snap.index, last entry index)
        self._dirty = False  # the last segment has writes not yet fdatasync'ed
        self._loaded = False
        self._failed: OSError | None = None
        self._lock_fd: int | None = None
        self.lock_timeout = lock_timeout

    # -- the LogStorage protocol -------------------------------------------
    def load(self) -> PersistedState:
        """Recover the durable state, repairing a torn tail left by a crash.

        Also finishes a `save_snapshot` that a crash interrupted, and removes
        leftover temporary and superseded snapshot files.

        Returns:
            hard state, snapshot position, the entries after the snapshot, and
            the snapshot's data in `snapshot_data` (None when there is no
            snapshot file at the snapshot position, e.g. after `compact()`).

        Raises:
            CorruptLog: a damaged record (other than a torn tail), a bad segment
                header, state file or snapshot file, a gap in the log, or a
                hard-state commit past the log's end. Nothing on disk is
                changed in that case.
            StorageError: the files could not be read.
        """
        self.close()
        try:
            if not self.wal_dir.is_dir():
                self.wal_dir.mkdir(parents=True, exist_ok=True)
                _fsync_dir(self.data_dir)  # else a crash could lose the new directories,
                _fsync_dir(self.data_dir.parent)  # and every segment with them
            self._lock()
            hs_fields = self._read_state(self.data_dir / "hardstate", _HS, _HS_MAGIC)
            hard_state = HardState(*hs_fields) if hs_fields else HardState()
            snapshot = snap_durable = _read_snapmeta(self.data_dir / "snapmeta")
            snap_files, temps = self._snapshot_files()
            data: bytes | None = None
            if snap_files and snap_files[-1][0] >= snapshot.index:
                file_meta, data = _read_snapshot_file(snap_files[-1][1], snap_files[-1][0])
                if file_meta.index == snapshot.index and snapshot.conf is None:
                    snapshot = file_meta  # (a version 1 snapmeta beside a version 2 file)
            segs, covered, entries, repair = self._scan(snapshot)
            discard = False
            if data is not None and file_meta.index > snapshot.index:
                # save_snapshot wrote this file, then a crash cut it short: apply its rule.
                tail = tail_after_snapshot(snapshot, entries, file_meta)
                discard = tail is None
                entries, snapshot = tail or [], file_meta
            last = snapshot.index if discard else max(snapshot.index, segs[-1].last if segs else 0)
            if hard_state.commit > last:
                path = self.data_dir / "hardstate"
                raise CorruptLog(
                    f"{path} says entry {hard_state.commit} is committed but the log ends at {last}; {_RESTORE}",
                    str(path),
                    0,
                )
            if discard:
                log.warning("wal.stale_log_after_snapshot_removed", path=str(self.wal_dir), index=snapshot.index,
                            segments=len(segs) + len(covered))
                self._segs, self._covered = segs, covered
                self._drop_segments()
                segs, covered = [], []
                self._write_snapmeta(snapshot)
                snap_durable = snapshot
            elif repair is not None:
                self._repair(*repair)
            in_use = snapshot.index if data is not None else -1
            for path in temps + [path for index, path in snap_files if index != in_use]:
                log.info("wal.snapshot_file_removed", path=str(path), index=snapshot.index)
                path.unlink()
            if segs:
                segs[-1].fd = os.open(segs[-1].path, os.O_RDWR)
        except OSError as exc:
            self.close()  # releases the lock too: a refused log must not stay locked
            raise StorageError(f"cannot read the log in {self.data_dir}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        self._segs, self._covered = segs, covered
        self._snap, self._snap_durable = snapshot, snap_durable  # differ: sync() finishes the snapshot
        self._snap_file = snapshot.index if data is not None else 0
        self._hs = self._hs_durable = hard_state
        self._last = last
        self._dirty, self._loaded, self._failed = False, True, None
        return PersistedState(hard_state, snapshot, tuple(entries), data)

    def append(self, entries: Sequence[Entry]) -> None:
        """Write entries after discarding any stored entry at index >= entries[0].index.

        Not durable until `sync()`. Overwriting a suffix and starting a new
        segment are the exceptions: they fsync at once (both are rare).

        Raises:
            ValueError: the entries are not contiguous, would leave a gap after
                the last entry, or rewrite entries covered by the snapshot or
                by the durable commit index.
            StorageError: a write failed, or an earlier one did.
        """
        if not entries:
            return
        self._check_usable()
        first = entries[0].index
        if first > self._last + 1:
            raise ValueError(f"append at {first} leaves a gap after {self._last}")
        if first <= self._snap.index:
            raise ValueError(f"append at {first} rewrites compacted entries (snapshot at {self._snap.index})")
        if first <= self._hs_durable.commit:
            raise ValueError(f"append at {first} rewrites committed entries (commit {self._hs_durable.commit})")
        records = _encode(entries, first)
        try:
            if self._segs and first <= self._segs[-1].last:
                self._truncate(first)
            i, n, limit = 0, len(records), self.segment_bytes
            while i < n:
                seg = self._segs[-1] if self._segs else None
                if seg is None or seg.last + 1 != first + i or seg.size >= limit:
                    seg = self._start_segment(first + i)
                j, size, offsets = i, seg.size, seg.offsets
                while j < n and (j == i or size < limit):  # never split a record
                    offsets.append(size)
                    size += len(records[j])
                    j += 1
                self._dirty = True
                _pwrite_all(seg.fd, b"".join(records[i:j]), seg.size)
                seg.size = size
                i = j
        except OSError as exc:
            self._fail("append", exc)
        self._last = first + len(entries) - 1

    def set_hard_state(self, hard_state: HardState) -> None:
        """Remember the hard state; `sync()` writes it (only if it changed).

        Raises:
            ValueError: a field does not fit in an unsigned 64-bit integer.
        """
        self._check_usable()
        try:
            _HS.pack(_HS_MAGIC, FORMAT_VERSION, hard_state.term, hard_state.vote, hard_state.commit)
        except struct.error as exc:
            raise ValueError(f"hard state {hard_state} cannot be stored: {exc}") from None
        self._hs = hard_state

    def sync(self) -> None:
        """Make every earlier call durable: one fdatasync for all appended records.

        Raises:
            ValueError: the hard state commits past the last entry; nothing is
                written (`load()` would refuse such a log as corrupt).
            StorageError: an fsync or write failed. The storage then refuses
                further calls until `load()` re-reads the disk, because after a
                failed fsync the kernel may have dropped the unsynced pages.
        """
        self._check_usable()
        if self._hs.commit > self._last:
            raise ValueError(f"hard state commit {self._hs.commit} is past the last entry {self._last}")
        try:
            if self._snap != self._snap_durable:
                self._write_snapmeta()
            if self._dirty:
                os.fdatasync(self._segs[-1].fd)
                self._dirty = False
            if self._hs != self._hs_durable:
                hs = self._hs
                self._write_state(self.data_dir / "hardstate", _HS, _HS_MAGIC, hs.term, hs.vote, hs.commit)
                self._hs_durable = hs
            self._delete_covered()
        except OSError as exc:
            self._fail("sync", exc)
        self.syncs += 1

    def compact(self, snapshot: SnapshotMeta) -> None:
        """Discard entries at or below snapshot.index; durable (files deleted) on `sync()`.

        Records the position only, with no snapshot data: `load()` then
        returns `snapshot_data=None`. Prefer `save_snapshot`.

        A snapshot at or below the current one is ignored. Segments holding
        entries above snapshot.index stay; `load()` skips their covered entries.

        Raises:
            ValueError: a field does not fit in an unsigned 64-bit integer.
        """
        self._check_usable()
        if snapshot.index <= self._snap.index:
            return
        try:
            _pack_snapmeta(snapshot)
        except struct.error as exc:
            raise ValueError(f"snapshot {snapshot} cannot be stored: {exc}") from None
        self._snap = snapshot
        self._last = max(self._last, snapshot.index)
        self._snap_file = 0  # the position moved past the stored snapshot's

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Store a state machine snapshot covering the log up to `meta.index`, and
        discard the log entries it covers. Durable when it returns.

        Entries after `meta.index` survive when the log's entry at
        `meta.index` has term `meta.term`. Otherwise (a follower installing a
        leader's snapshot its log does not reach or disagrees with) every
        segment is deleted and the next append starts at `meta.index + 1`.
        A snapshot older than the stored one, or the stored one again, is
        ignored. Only the newest snapshot file is kept.

        Raises:
            ValueError: meta.index is 0, a field does not fit the format, or
                discarding the log would drop entries past `meta.index` that
                the hard state says are committed. Nothing is written then.
            StorageError: a write failed, or an earlier one did.
        """
        self._check_usable()
        if meta.index <= 0:
            raise ValueError(f"a snapshot covers at least entry 1, got {meta}")
        try:
            _snapshot_header(meta, len(data), 0)
        except struct.error as exc:
            raise ValueError(f"snapshot {meta} cannot be stored: {exc}") from None
        if meta.index < self._snap.index or (meta.index == self._snap.index and self._snap_file == meta.index):
            return
        keep = self._term_at(meta.index) == meta.term
        commit = max(self._hs.commit, self._hs_durable.commit)
        if not keep and commit > meta.index:
            raise ValueError(f"snapshot {meta} disagrees with the log, whose entries up to {commit} "
                             "are committed: refusing to discard them")
        try:
            if self._prepared != (meta, len(data)):
                self._write_snapshot_file(meta, data)  # from here on, this is the snapshot
            self._prepared = None
            if keep:
                self._write_snapmeta(meta)
                self._snap = meta
                self._last = max(self._last, meta.index)
                self._delete_covered()
            else:
                log.info("wal.log_replaced_by_snapshot", path=str(self.wal_dir), index=meta.index, term=meta.term,
                         last=self._last)
                self._drop_segments()  # before snapmeta: see the module docstring
                self._write_snapmeta(meta)
                self._snap = meta
                self._last = meta.index
            self._snap_file = meta.index
            self._delete_snapshot_files_except(meta.index)
        except OSError as exc:
            self._fail("snapshot", exc)

    def prepare_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Write the snapshot file ahead of `save_snapshot(meta, data)`, which
        then only records it and discards the log it covers.

        Touches nothing but the new file, so it may run on another thread
        while the log is being appended to: a replica writes a large
        snapshot without holding up its log. The caller must only prepare a
        snapshot of committed state whose (index, term) is in this log: a
        crash between prepare and save leaves a file that `load()` finishes
        saving, as it does for a save cut short. `meta` should carry the
        configuration at its index (`RaftCore.snapshot_meta(index)`): the
        file records it, and a `save_snapshot` with another meta (e.g. one
        without the configuration) writes the file again.
        """
        self._write_snapshot_file(meta, data)
        self._prepared = (meta, len(data))

    def close(self) -> None:
        """Release files and the directory lock. Unsynced work may be lost; call
        `load()` to use it again."""
        for seg in self._segs:
            if seg.fd is not None:
                os.close(seg.fd)
                seg.fd = None
        self._segs = []
        self._loaded = False
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _lock(self) -> None:
        """Take the data directory for this process: two replicas writing one
        log would corrupt it. A process that dies releases its lock, so a
        replica restarted while its predecessor is still exiting waits a little."""
        fd = os.open(self.data_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StorageError(f"{self.data_dir} is in use by another replica (its LOCK is held); "
                                       f"give each replica its own data directory") from None
                time.sleep(0.05)
        self._lock_fd = fd

    # -- recovery ------------------------------------------------------------
    def _scan(self, snap: SnapshotMeta) -> tuple[list[_Segment], list[Path], list[Entry], tuple[Path, int] | None]:
        """Read the segments; return them, the covered ones, entries, and a tail repair."""
        paths = sorted(p for p in self.wal_dir.iterdir() if _SEG_NAME.match(p.name))
        firsts = [int(p.name[:16]) for p in paths]
        start = 0  # segments followed by one starting at or below snap.index + 1 are covered
        while start + 1 < len(paths) and firsts[start + 1] <= snap.index + 1:
            start += 1
        segs: list[_Segment] = []
        entries: list[Entry] = []
        for k in range(start, len(paths)):
            path, is_last = paths[k], k == len(paths) - 1
            buf = path.read_bytes()
            if is_last and (len(buf) < _SEG_HEADER_SIZE or buf.count(0) == len(buf)):
                return segs, paths[:start], entries, (path, 0)  # crashed while being created
            first = _check_header(path, buf, firsts[k])
            expected = segs[-1].last + 1 if segs else None
            if (expected is not None and first != expected) or (expected is None and first > snap.index + 1):
                want = expected if expected is not None else snap.index + 1
                raise CorruptLog(
                    f"{path} starts at entry {first} but the log needs entry {want} next: "
                    f"a segment is missing; {_RESTORE}",
                    str(path),
                    0,
                )
            seg, torn = _read_records(path, buf, first, is_last, snap.index, entries)
            segs.append(seg)
            if torn:
                return segs, paths[:start], entries, (path, seg.size)
        return segs, paths[:start], entries, None

    def _repair(self, path: Path, offset: int) -> None:
        """Cut a torn tail at `offset` (0: remove a segment whose header is torn)."""
        if offset == 0:
            log.warning("wal.torn_segment_removed", path=str(path), offset=0, size=path.stat().st_size)
            path.unlink()
            _fsync_dir(self.wal_dir)
            return
        log.warning("wal.torn_tail_truncated", path=str(path), offset=offset, dropped=path.stat().st_size - offset)
        fd = os.open(path, os.O_RDWR)
        try:
            os.ftruncate(fd, offset)
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def _read_state(self, path: Path, layout: struct.Struct, magic: bytes) -> tuple[int, ...] | None:
        """Fields of a state file after magic and version, or None if it does not exist."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        if len(raw) < 12 or raw[:8] != magic:
            raise CorruptLog(f"{path} is not a raftkv state file (too short, or bad magic); {_RESTORE}", str(path), 0)
        (version,) = _U32.unpack_from(raw, 8)
        if version != FORMAT_VERSION:
            raise CorruptLog(
                f"{path} has format version {version}, this raftkv reads version {FORMAT_VERSION}: "
                "run a raftkv release that supports it",
                str(path),
                0,
            )
        if len(raw) != layout.size + 4 or crc32c.crc32c(raw[: layout.size]) != _U32.unpack_from(raw, layout.size)[0]:
            raise CorruptLog(f"{path} fails its checksum; {_RESTORE}", str(path), 0)
        return layout.unpack_from(raw)[2:]

    # -- writing -------------------------------------------------------------
    def _start_segment(self, first: int) -> _Segment:
        """Create and sync a segment starting at `first`, after syncing the previous one."""
        if self._snap != self._snap_durable:
            self._write_snapmeta()  # a segment after a gap is only valid behind its snapshot
        if self._segs and self._segs[-1].fd is not None:
            prev = self._segs[-1]
            if self._dirty:
                os.fdatasync(prev.fd)  # invariant: only the last segment may be torn
            os.close(prev.fd)
            prev.fd = None
        self._dirty = False
        path = self.wal_dir / f"{first:016d}.seg"
        header = _SEG_HEADER.pack(_SEG_MAGIC, FORMAT_VERSION, first)
        header += _U32.pack(crc32c.crc32c(header))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        seg = _Segment(path, first, array("Q"), len(header), fd)
        self._segs.append(seg)
        _pwrite_all(fd, header, 0)
        os.fdatasync(fd)
        _fsync_dir(self.wal_dir)
        return seg

    def _truncate(self, index: int) -> None:
        """Durably drop entries >= index: delete later segments, then cut the holder."""
        k = bisect.bisect_right(self._segs, index, key=lambda s: s.first) - 1
        seg = self._segs[k]
        later = self._segs[k + 1 :]
        if later:
            for s in later:
                if s.fd is not None:
                    os.close(s.fd)
                    s.fd = None
                s.path.unlink()
            del self._segs[k + 1 :]
            _fsync_dir(self.wal_dir)
        if seg.fd is None:
            seg.fd = os.open(seg.path, os.O_RDWR)
        cut = seg.offsets[index - seg.first]
        os.ftruncate(seg.fd, cut)
        os.fdatasync(seg.fd)  # stale records must not reappear behind new ones
        del seg.offsets[index - seg.first :]
        seg.size = cut
        self._dirty = False

    def _delete_covered(self) -> None:
        """Delete segments whose entries are all covered by the durable snapshot."""
        doomed, self._covered = self._covered, []
        while self._segs and self._segs[0].last <= self._snap_durable.index:
            seg = self._segs.pop(0)
            if seg.fd is not None:
                os.close(seg.fd)
                seg.fd = None
                self._dirty = False
            doomed.append(seg.path)
        for path in doomed:
            path.unlink(missing_ok=True)
        if doomed:
            _fsync_dir(self.wal_dir)

    def _write_snapmeta(self, snap: SnapshotMeta | None = None) -> None:
        snap = snap or self._snap
        raw = _pack_snapmeta(snap)
        self._write_atomic(self.data_dir / "snapmeta", raw + _U32.pack(crc32c.crc32c(raw)))
        self._snap_durable = snap

    def _snapshot_files(self) -> tuple[list[tuple[int, Path]], list[Path]]:
        """Snapshot files as (index, path), oldest first; and leftover temp files."""
        files, temps = [], []
        for path in self.data_dir.iterdir():
            m = _SNAPFILE_NAME.match(path.name)
            if m:
                files.append((int(m.group(1)), path))
            elif path.name.startswith("snapshot-") and path.name.endswith(".tmp"):
                temps.append(path)  # a save that crashed before its rename: never used
        files.sort()
        return files, temps

    def _term_at(self, index: int) -> int | None:
        """Term of the stored entry at `index` (the snapshot's at its index), or None."""
        if index == self._snap.index:
            return self._snap.term
        if index < self._snap.index or index > self._last or not self._segs:
            return None
        k = bisect.bisect_right(self._segs, index, key=lambda s: s.first) - 1
        if k < 0 or index > self._segs[k].last:
            return None
        seg = self._segs[k]
        offset = seg.offsets[index - seg.first]
        fd = seg.fd if seg.fd is not None else os.open(seg.path, os.O_RDONLY)
        try:
            raw = os.pread(fd, _REC_HEADER_SIZE, offset)
        finally:
            if fd != seg.fd:
                os.close(fd)
        _, _, term, idx, _ = _REC_HEADER.unpack(raw)
        if idx != index:
            raise CorruptLog(f"{seg.path} at byte offset {offset} holds entry {idx}, expected {index}; {_RESTORE}",
                             str(seg.path), offset)
        return term

    def _drop_segments(self) -> None:
        """Durably delete every segment, newest first, so a crash leaves a prefix of the log."""
        doomed = [seg.path for seg in self._segs] + self._covered
        for seg in self._segs:
            if seg.fd is not None:
                os.close(seg.fd)
                seg.fd = None
        self._segs, self._covered, self._dirty = [], [], False
        for path in sorted(doomed, reverse=True):
            path.unlink(missing_ok=True)
            _fsync_dir(self.wal_dir)

    def _write_snapshot_file(self, meta: SnapshotMeta, data: bytes) -> None:
        """Atomically write the snapshot file: temp file, fsync, rename, fsync the directory."""
        header = _snapshot_header(meta, len(data), crc32c.crc32c(data))
        header += _U32.pack(crc32c.crc32c(header))
        path = self.data_dir / f"snapshot-{meta.index:016d}.snap"
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _pwrite_all(fd, header, 0)
            _pwrite_all(fd, data, len(header))
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(self.data_dir)

    def _delete_snapshot_files_except(self, index: int) -> None:
        files, temps = self._snapshot_files()
        doomed = temps + [path for i, path in files if i != index]
        for path in doomed:
            path.unlink(missing_ok=True)
        if doomed:
            _fsync_dir(self.data_dir)

    def _write_state(self, path: Path, layout: struct.Struct, magic: bytes, *fields: int) -> None:
        """Atomically replace a fixed-layout state file."""
        raw = layout.pack(magic, FORMAT_VERSION, *fields)
        self._write_atomic(path, raw + _U32.pack(crc32c.crc32c(raw)))

    def _write_atomic(self, path: Path, raw: bytes) -> None:
        """Atomically replace a file: write a temp file, fsync, rename, fsync the directory."""
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _pwrite_all(fd, raw, 0)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(self.data_dir)

    def _check_usable(self) -> None:
        if not self._loaded:
            raise StorageError(f"the log in {self.data_dir} is not open: call load() first")
        if self._failed is not None:
            raise StorageError(
                f"an earlier I/O error ({self._failed}) left the log in {self.data_dir} in an unknown "
                "state: close it and call load() to recover from what is on disk"
            )

    def _fail(self, op: str, exc: OSError) -> None:
        self._failed = exc
        raise StorageError(f"WAL {op} failed in {self.wal_dir}: {exc}; call load() to recover") from exc


def _encode_conf(conf: Membership | None) -> bytes:
    """u32 length, then the membership encoding (length 0: not recorded)."""
    raw = conf.encode() if conf is not None else b""
    return _U32.pack(len(raw)) + raw


def _decode_conf(raw: bytes, pos: int, path: Path) -> tuple[Membership | None, int]:
    """The conf block at `pos` of a (checksummed) header; returns it and the offset after it."""
    if pos + 4 > len(raw):
        raise CorruptLog(f"{path} is too short for its configuration; {_RESTORE}", str(path), pos)
    (n,) = _U32.unpack_from(raw, pos)
    end = pos + 4 + n
    if end > len(raw):
        raise CorruptLog(f"{path} is too short for its configuration; {_RESTORE}", str(path), pos)
    if n == 0:
        return None, end
    try:
        return Membership.decode(raw[pos + 4 : end]), end
    except ValueError as exc:
        raise CorruptLog(f"{path} has a bad configuration ({exc}); {_RESTORE}", str(path), pos) from None


def _pack_snapmeta(snap: SnapshotMeta) -> bytes:
    """snapmeta without its trailing CRC (version 2)."""
    return _SNAP.pack(_SNAP_MAGIC, SNAPSHOT_FORMAT_VERSION, snap.index, snap.term) + _encode_conf(snap.conf)


def _snapshot_header(meta: SnapshotMeta, length: int, checksum: int) -> bytes:
    """A snapshot file's header without its trailing CRC (version 2)."""
    fixed = _SNAPFILE.pack(_SNAPFILE_MAGIC, SNAPSHOT_FORMAT_VERSION, meta.index, meta.term, length, checksum)
    return fixed + _encode_conf(meta.conf)


def _check_snapshot_version(path: Path, version: int) -> None:
    if version not in (1, SNAPSHOT_FORMAT_VERSION):
        raise CorruptLog(
            f"{path} has snapshot format version {version}, this raftkv reads versions 1 and "
            f"{SNAPSHOT_FORMAT_VERSION}: run a raftkv release that supports it",
            str(path),
            0,
        )


def _read_snapmeta(path: Path) -> SnapshotMeta:
    """The snapshot position file (version 1 or 2); SnapshotMeta() if there is none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return SnapshotMeta()
    if len(raw) < 12 or raw[:8] != _SNAP_MAGIC:
        raise CorruptLog(f"{path} is not a raftkv state file (too short, or bad magic); {_RESTORE}", str(path), 0)
    (version,) = _U32.unpack_from(raw, 8)
    _check_snapshot_version(path, version)
    if len(raw) < _SNAP.size + 4 or crc32c.crc32c(raw[:-4]) != _U32.unpack_from(raw, len(raw) - 4)[0]:
        raise CorruptLog(f"{path} fails its checksum; {_RESTORE}", str(path), 0)
    _, _, index, term = _SNAP.unpack_from(raw)
    conf, end = None, _SNAP.size
    if version >= 2:
        conf, end = _decode_conf(raw, _SNAP.size, path)
    if end != len(raw) - 4:
        raise CorruptLog(f"{path} has {len(raw) - 4 - end} bytes too many; {_RESTORE}", str(path), end)
    return SnapshotMeta(index, term, conf)


def _read_snapshot_file(path: Path, name_index: int) -> tuple[SnapshotMeta, bytes]:
    """Read and check a snapshot file (version 1 or 2); return its meta and data."""
    raw = path.read_bytes()
    if len(raw) < _SNAPFILE_HEADER_SIZE_V1 or raw[:8] != _SNAPFILE_MAGIC:
        raise CorruptLog(f"{path} is not a raftkv snapshot file (too short, or bad magic); {_RESTORE}", str(path), 0)
    (version,) = _U32.unpack_from(raw, 8)
    _check_snapshot_version(path, version)
    conf, end = None, _SNAPFILE.size
    if version >= 2:
        # The conf length is checked against the file's size before its bytes
        # are used, and the header CRC after them covers it.
        conf_len = _U32.unpack_from(raw, _SNAPFILE.size)[0]
        end = _SNAPFILE.size + 4 + conf_len
        if end + 4 > len(raw):
            raise CorruptLog(f"{path} has a header longer than the file; {_RESTORE}", str(path), 0)
    if crc32c.crc32c(raw[:end]) != _U32.unpack_from(raw, end)[0]:
        raise CorruptLog(f"{path} has a header that fails its checksum; {_RESTORE}", str(path), 0)
    if version >= 2:
        conf, _ = _decode_conf(raw, _SNAPFILE.size, path)
    _, _, index, term, length, checksum = _SNAPFILE.unpack_from(raw)
    if index != name_index:
        raise CorruptLog(f"{path} header says it covers entry {index}, its name disagrees; {_RESTORE}", str(path), 0)
    header_size = end + 4
    data = raw[header_size:]
    if len(data) != length:
        raise CorruptLog(f"{path} holds {len(data)} bytes of data, its header says {length}; {_RESTORE}",
                         str(path), header_size)
    if crc32c.crc32c(data) != checksum:
        raise CorruptLog(f"{path} has snapshot data that fails its checksum; {_RESTORE}", str(path), header_size)
    return SnapshotMeta(index, term, conf), data


def _encode(entries: Sequence[Entry], first: int) -> list[bytes]:
    """Pack entries into records; check contiguity, sizes and kinds before any write."""
    pack, crc, pack_crc, kinds = _REC_BODY.pack, crc32c.crc32c, _U32.pack, _KINDS
    records = []
    index = first
    try:
        for e in entries:
            if e.index != index:
                raise ValueError(f"entries are not contiguous: entry {e.index} where {index} was expected")
            if e.kind not in kinds:
                raise ValueError(f"entry {index} has unknown kind {e.kind!r}")
            body = pack(len(e.data), e.term, index, e.kind) + e.data
            records.append(pack_crc(crc(body)) + body)
            index += 1
    except struct.error as exc:
        raise ValueError(f"entry {index} cannot be stored: {exc}") from None
    return records


def _check_header(path: Path, buf: bytes, name_first: int) -> int:
    """Validate a segment header; return its first index."""
    if len(buf) < _SEG_HEADER_SIZE or buf[:8] != _SEG_MAGIC:
        raise CorruptLog(f"{path} is not a raftkv WAL segment (short header, or bad magic); {_RESTORE}", str(path), 0)
    _, version, first = _SEG_HEADER.unpack_from(buf)
    if version != FORMAT_VERSION:
        raise CorruptLog(
            f"{path} has WAL format version {version}, this raftkv reads version {FORMAT_VERSION}: "
            "run a raftkv release that supports it",
            str(path),
            0,
        )
    if crc32c.crc32c(buf[: _SEG_HEADER.size]) != _U32.unpack_from(buf, _SEG_HEADER.size)[0]:
        raise CorruptLog(f"{path} has a segment header that fails its checksum; {_RESTORE}", str(path), 0)
    if first != name_first:
        raise CorruptLog(f"{path} header says it starts at entry {first}, its name disagrees; {_RESTORE}", str(path), 0)
    return first


def _read_records(
    path: Path, buf: bytes, first: int, is_last: bool, skip_upto: int, out: list[Entry]
) -> tuple[_Segment, bool]:
    """Parse a segment's records, appending entries above `skip_upto` to `out`.

    Returns the segment (ending at its last whole record) and whether a torn
    tail follows that record. Raises CorruptLog for any other damage.
    """
    view = memoryview(buf)
    unpack, crc, kinds, hsize = _REC_HEADER.unpack_from, crc32c.crc32c, _KINDS, _REC_HEADER_SIZE
    n, pos, index = len(buf), _SEG_HEADER_SIZE, first
    offsets = array("Q")
    while pos < n:
        if pos + hsize > n:
            problem = "incomplete record header"
            break
        checksum, dlen, term, idx, kind = unpack(buf, pos)
        end = pos + hsize + dlen
        if end > n:
            problem = "incomplete record"
            break
        if crc(view[pos + 4 : end]) != checksum:
            problem = "checksum mismatch"
            break
        if idx != index or kind not in kinds:
            what = f"entry {idx} where {index} was expected" if idx != index else f"unknown entry kind {kind}"
            raise CorruptLog(f"{path} at byte offset {pos} holds {what}; {_RESTORE}", str(path), pos)
        offsets.append(pos)
        if idx > skip_upto:
            out.append(Entry(term, idx, buf[pos + hsize : end], kinds[kind]))
        pos, index = end, index + 1
    else:
        return _Segment(path, first, offsets, pos), False
    if is_last and not _valid_record_after(buf, pos, index):
        return _Segment(path, first, offsets, pos), True
    raise CorruptLog(f"{path} at byte offset {pos}: {problem}; {_RESTORE}", str(path), pos)


def _valid_record_after(buf: bytes, pos: int, index: int) -> bool:
    """Whether a whole, checksummed record of entry >= index starts after `pos`.

    A crash tears only the end of what was written, so valid data after a bad
    record means the bad record is damage, not a torn tail. This scans byte by
    byte, but runs only on a damaged record and stops at the first valid one.
    """
    n = len(buf)
    if buf.count(0, pos) == n - pos:
        return False  # an extension whose data never reached the disk
    view, unpack, hsize = memoryview(buf), _REC_HEADER.unpack_from, _REC_HEADER_SIZE
    top = index + (n - pos) // hsize
    for o in range(pos + 1, n - hsize + 1):
        checksum, dlen, _, idx, _ = unpack(buf, o)
        if index <= idx <= top and o + hsize + dlen <= n and crc32c.crc32c(view[o + 4 : o + hsize + dlen]) == checksum:
            return True
    return False


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
