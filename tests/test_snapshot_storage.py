"""Snapshot files in FileStorage and MemoryStorage: format, atomicity, the
keep-or-discard rule for the log after a snapshot, and crash states of
`save_snapshot`."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import crc32c
import pytest

from kv.errors import CorruptLog
from raft_actors.membership import Membership
from raft_actors.storage import MemoryStorage
from raft_actors.types import Entry, HardState, PersistedState, SnapshotMeta
from raft_actors.wal import FileStorage

SNAP_HEADER = 48  # version 2 header of a snapshot whose configuration is not recorded


def ents(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, f"{term}:{i}".encode()) for i in range(first, last + 1)]


def opened(path: Path, **kw) -> tuple[FileStorage, PersistedState]:
    storage = FileStorage(path, **kw)
    return storage, storage.load()


def with_log(path: Path, entries: list[Entry], commit: int = 0, **kw) -> FileStorage:
    storage, _ = opened(path, **kw)
    storage.append(entries)
    storage.set_hard_state(HardState(entries[-1].term if entries else 0, 1, commit))
    storage.sync()
    return storage


def snap_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("snapshot-*"))


def snap_path(path: Path, index: int) -> Path:
    return path / f"snapshot-{index:016d}.snap"


def segs(path: Path) -> list[Path]:
    return sorted((path / "wal").glob("*.seg"))


# -- round trips and format --------------------------------------------------------
def test_snapshot_roundtrip_keeps_the_tail(tmp_path: Path) -> None:
    storage = with_log(tmp_path, ents(1, 20), commit=15, segment_bytes=120)
    data = bytes(range(256)) * 50
    storage.save_snapshot(SnapshotMeta(12, 1), data)
    # durable at once: no sync() needed
    storage.close()
    storage, state = opened(tmp_path, segment_bytes=120)
    assert state == PersistedState(HardState(1, 1, 15), SnapshotMeta(12, 1), tuple(ents(13, 20)), data)
    assert all(int(p.name[:16]) > 1 for p in segs(tmp_path))  # covered segments are gone
    storage.append(ents(21, 22, term=2))  # appends continue after the tail
    storage.sync()
    storage.close()
    assert opened(tmp_path)[1].entries == tuple(ents(13, 20) + ents(21, 22, term=2))


def test_snapshot_file_format(tmp_path: Path) -> None:
    storage = with_log(tmp_path, ents(1, 5, term=3), commit=5)
    conf = Membership((3, 1, 2), (7,))
    storage.save_snapshot(SnapshotMeta(4, 3, conf), b"state!")
    storage.close()
    raw = snap_path(tmp_path, 4).read_bytes()
    # version 2: the fixed part, then the configuration at the snapshot's index
    assert struct.unpack("<8sIQQQI", raw[:40]) == (b"RKVSNAPD", 2, 4, 3, 6, crc32c.crc32c(b"state!"))
    (conf_len,) = struct.unpack("<I", raw[40:44])
    assert raw[44 : 44 + conf_len] == struct.pack("<HHQQQQ", 3, 1, 1, 2, 3, 7)
    end = 44 + conf_len
    assert struct.unpack("<I", raw[end : end + 4])[0] == crc32c.crc32c(raw[:end])
    assert raw[end + 4 :] == b"state!"
    assert opened(tmp_path)[1].snapshot == SnapshotMeta(4, 3, conf)


def test_only_the_newest_snapshot_file_is_kept(tmp_path: Path) -> None:
    storage = with_log(tmp_path, ents(1, 30), commit=30)
    storage.save_snapshot(SnapshotMeta(10, 1), b"ten")
    storage.save_snapshot(SnapshotMeta(20, 1), b"twenty")
    assert snap_files(tmp_path) == [snap_path(tmp_path, 20).name]
    storage.save_snapshot(SnapshotMeta(15, 1), b"older: ignored")
    storage.save_snapshot(SnapshotMeta(20, 1), b"the same one again: ignored")
    storage.close()
    state = opened(tmp_path)[1]
    assert (state.snapshot, state.snapshot_data, state.entries) == (SnapshotMeta(20, 1), b"twenty", tuple(ents(21, 30)))


def test_empty_snapshot_data_is_a_snapshot(tmp_path: Path) -> None:
    storage = with_log(tmp_path, ents(1, 3), commit=3)
    storage.save_snapshot(SnapshotMeta(3, 1), b"")
    storage.close()
    state = opened(tmp_path)[1]
    assert state.snapshot == SnapshotMeta(3, 1) and state.snapshot_data == b"" and state.entries == ()


def test_compact_alone_leaves_no_snapshot_data(tmp_path: Path) -> None:
    storage = with_log(tmp_path, ents(1, 10), commit=10)
    storage.save_snapshot(SnapshotMeta(4, 1), b"four")
    storage.compact(SnapshotMeta(6, 1))  # a position past the stored snapshot
    storage.sync()
    storage.close()
    storage, state = opened(tmp_path)
    assert state.snapshot == SnapshotMeta(6, 1) and state.snapshot_data is None
    assert snap_files(tmp_path) == []  # the superseded file is removed
    storage.close()


def test_save_snapshot_argument_checks(tmp_path: Path) -> None:
    storage = with_log(tmp_path, ents(1, 5), commit=5)
    with pytest.raises(ValueError, match="at least entry 1"):
        storage.save_snapshot(SnapshotMeta(0, 0), b"")
    with pytest.raises(ValueError, match="cannot be stored"):
        storage.save_snapshot(SnapshotMeta(2**64, 1), b"")
    # Term 2 at index 3 disagrees with the log, and entries 4, 5 are committed.
    with pytest.raises(ValueError, match="committed"):
        storage.save_snapshot(SnapshotMeta(3, 2), b"x")
    assert snap_files(tmp_path) == []
    storage.close()
    assert opened(tmp_path)[1].entries == tuple(ents(1, 5))


# -- the log after the snapshot ---------------------------------------------------
def test_snapshot_beyond_the_last_entry_discards_the_log(tmp_path: Path) -> None:
    storage = with_log(tmp_path, ents(1, 10), commit=4, segment_bytes=100)
    storage.save_snapshot(SnapshotMeta(20, 3), b"leader's state")
    assert segs(tmp_path) == []
    with pytest.raises(ValueError, match="gap"):
        storage.append(ents(22, 22, term=3))
    storage.append(ents(21, 23, term=3))
    storage.set_hard_state(HardState(3, 0, 21))
    storage.sync()
    storage.close()
    state = opened(tmp_path)[1]
    assert state == PersistedState(HardState(3, 0, 21), SnapshotMeta(20, 3), tuple(ents(21, 23, term=3)),
                                   b"leader's state")


def test_snapshot_that_disagrees_with_the_log_discards_all_of_it(tmp_path: Path) -> None:
    # Entries 4.. are of term 1 here; the leader's snapshot says entry 6 is of term 2.
    storage = with_log(tmp_path, ents(1, 3) + ents(4, 12, term=1), commit=3, segment_bytes=100)
    storage.save_snapshot(SnapshotMeta(6, 2), b"s")
    storage.close()
    storage, state = opened(tmp_path)
    assert state.snapshot == SnapshotMeta(6, 2) and state.entries == ()  # 7..12 were of the wrong history
    storage.append(ents(7, 8, term=2))
    storage.sync()
    storage.close()
    assert opened(tmp_path)[1].entries == tuple(ents(7, 8, term=2))


def test_snapshot_within_the_log_with_a_matching_term_keeps_later_entries(tmp_path: Path) -> None:
    storage = with_log(tmp_path, ents(1, 5) + ents(6, 9, term=2), commit=2)
    storage.save_snapshot(SnapshotMeta(7, 2), b"s")  # figure 13, step 6
    storage.close()
    assert opened(tmp_path)[1].entries == tuple(ents(8, 9, term=2))


def test_unsynced_entries_after_a_snapshot_leave_a_valid_prefix(tmp_path: Path) -> None:
    storage = with_log(tmp_path, ents(1, 8), commit=8)
    storage.append(ents(9, 12))  # not synced: may or may not survive, but never breaks the load
    storage.save_snapshot(SnapshotMeta(10, 1), b"ten")
    storage.close()  # crash-like: nothing more synced
    state = opened(tmp_path)[1]
    assert state.snapshot == SnapshotMeta(10, 1) and state.snapshot_data == b"ten"
    assert state.entries == tuple(ents(11, 12))[: len(state.entries)]


# -- damage and crash states -----------------------------------------------------
def test_torn_temp_snapshot_file_is_ignored_and_removed(tmp_path: Path) -> None:
    storage = with_log(tmp_path, ents(1, 10), commit=10)
    storage.save_snapshot(SnapshotMeta(5, 1), b"five")
    storage.close()
    tmp = tmp_path / (snap_path(tmp_path, 9).name + ".tmp")
    tmp.write_bytes(b"RKVSNAPD\x01\x00")  # a crash during the write, before the rename
    storage, state = opened(tmp_path)
    assert state.snapshot == SnapshotMeta(5, 1) and state.snapshot_data == b"five"
    assert state.entries == tuple(ents(6, 10))
    assert not tmp.exists()
    storage.close()


@pytest.mark.parametrize("damage", ["data", "header", "short", "long", "magic", "version", "name"])
def test_damaged_snapshot_file_raises_naming_it(tmp_path: Path, damage: str) -> None:
    storage = with_log(tmp_path, ents(1, 10), commit=10)
    storage.save_snapshot(SnapshotMeta(8, 1), b"important state" * 10)
    storage.close()
    path = snap_path(tmp_path, 8)
    raw = bytearray(path.read_bytes())
    if damage == "data":
        raw[SNAP_HEADER + 3] ^= 0x10
    elif damage == "header":
        raw[20] ^= 0x01  # the term
    elif damage == "short":
        raw = raw[:-1]
    elif damage == "long":
        raw += b"\x00"
    elif damage == "magic":
        raw[0:8] = b"NOTASNAP"
    elif damage == "version":
        raw[8:12] = struct.pack("<I", 7)
    if damage == "name":
        path.rename(snap_path(tmp_path, 9))
        path = snap_path(tmp_path, 9)
    else:
        path.write_bytes(bytes(raw))
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(CorruptLog, match="version 7" if damage == "version" else "snapshot") as info:
        FileStorage(tmp_path).load()
    assert info.value.path == str(path)
    assert {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing changed


def _crash_after_snapshot_file(tmp_path: Path, entries: list[Entry], commit: int, meta: SnapshotMeta,
                               drop_last_segments: int = 0) -> Path:
    """The disk as a crash right after save_snapshot's rename leaves it: the new
    file next to the old snapmeta and the old segments (some deleted, newest first)."""
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    storage = with_log(live, entries, commit=commit, segment_bytes=100)
    storage.close()
    shutil.copytree(live, crashed)
    storage, _ = opened(live, segment_bytes=100)
    storage.save_snapshot(meta, b"snap")
    storage.close()
    shutil.copy(snap_path(live, meta.index), snap_path(crashed, meta.index))
    for seg in segs(crashed)[len(segs(crashed)) - drop_last_segments :] if drop_last_segments else []:
        seg.unlink()
    (crashed / "LOCK").unlink(missing_ok=True)
    return crashed


def test_crash_after_the_snapshot_file_keeps_a_matching_tail(tmp_path: Path) -> None:
    crashed = _crash_after_snapshot_file(tmp_path, ents(1, 30), 30, SnapshotMeta(12, 1))
    storage, state = opened(crashed, segment_bytes=100)
    assert state.snapshot == SnapshotMeta(12, 1) and state.snapshot_data == b"snap"
    assert state.entries == tuple(ents(13, 30))
    storage.sync()  # finishes the job: snapmeta, covered segments
    storage.close()
    assert all(int(p.name[:16]) > 1 for p in segs(crashed))
    assert opened(crashed)[1] == state


@pytest.mark.parametrize("deleted", [0, 1, 2])
def test_crash_during_a_log_replacing_snapshot_discards_the_stale_log(tmp_path: Path, deleted: int) -> None:
    # Entries 11..30 are of term 1; the leader's snapshot says entry 20 is of term 2.
    crashed = _crash_after_snapshot_file(tmp_path, ents(1, 30), 10, SnapshotMeta(20, 2), deleted)
    storage, state = opened(crashed, segment_bytes=100)
    assert state == PersistedState(HardState(1, 1, 10), SnapshotMeta(20, 2), (), b"snap")
    assert segs(crashed) == []
    storage.append(ents(21, 21, term=2))
    storage.sync()
    storage.close()
    assert opened(crashed)[1].entries == (ents(21, 21, term=2)[0],)


# -- the in-memory twin -------------------------------------------------------------
def test_memory_storage_snapshot_is_durable_without_sync() -> None:
    mem = MemoryStorage()
    mem.load()
    mem.append(ents(1, 10))
    mem.set_hard_state(HardState(1, 1, 6))
    mem.sync()
    mem.append(ents(11, 12))  # unsynced
    mem.save_snapshot(SnapshotMeta(8, 1), b"eight")
    mem.crash()
    state = mem.load()
    assert state == PersistedState(HardState(1, 1, 6), SnapshotMeta(8, 1), tuple(ents(9, 10)), b"eight")
    mem.save_snapshot(SnapshotMeta(20, 2), b"beyond")
    assert mem.load() == PersistedState(HardState(1, 1, 6), SnapshotMeta(20, 2), (), b"beyond")
    with pytest.raises(ValueError, match="gap"):
        mem.append(ents(22, 22, term=2))
    mem.append(ents(21, 21, term=2))


@pytest.mark.parametrize("meta", [SnapshotMeta(5, 1), SnapshotMeta(5, 2), SnapshotMeta(25, 2), SnapshotMeta(12, 1)])
def test_memory_and_file_storage_agree_on_snapshots(tmp_path: Path, meta: SnapshotMeta) -> None:
    mem = MemoryStorage()
    mem.load()
    disk, _ = opened(tmp_path, segment_bytes=80)
    for storage in (mem, disk):
        storage.append(ents(1, 12))
        storage.set_hard_state(HardState(1, 1, 3))
        storage.sync()
        storage.save_snapshot(meta, b"m")
        storage.append([Entry(meta.term, meta.index + 1, b"after")])
        storage.sync()
    disk.close()
    assert FileStorage(tmp_path).load() == mem.load()
