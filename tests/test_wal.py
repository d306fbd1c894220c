"""Tests for raft_actors.wal.FileStorage: format, recovery, crash states, and
agreement with the in-memory twin."""

from __future__ import annotations

import os
import random
import shutil
import struct
from pathlib import Path

import crc32c
import pytest

from kv.errors import CorruptLog, StorageError
from raft_actors.storage import MemoryStorage
from raft_actors.types import Entry, EntryKind, HardState, PersistedState, SnapshotMeta
from raft_actors.wal import FileStorage

HEADER = 24  # segment header bytes
REC = 25  # record bytes before the data


def ents(first: int, last: int, term: int = 1, size: int = 10) -> list[Entry]:
    return [Entry(term, i, f"{term}:{i}:".encode().ljust(size, b"#")) for i in range(first, last + 1)]


def reopen(path: Path, **kw) -> tuple[FileStorage, PersistedState]:
    storage = FileStorage(path, **kw)
    return storage, storage.load()


def segs(path: Path) -> list[Path]:
    return sorted((path / "wal").glob("*.seg"))


def files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def written(path: Path, entries: list[Entry], hard_state: HardState | None = None, **kw) -> None:
    storage, _ = reopen(path, **kw)
    storage.append(entries)
    if hard_state is not None:
        storage.set_hard_state(hard_state)
    storage.sync()
    storage.close()


def record_offset(entries: list[Entry], index: int) -> int:
    """Byte offset of entry `index`'s record, for entries all in one segment."""
    return HEADER + sum(REC + len(e.data) for e in entries if e.index < index)


def flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


# -- round trips -----------------------------------------------------------------
def test_missing_data_dir_is_created_and_loads_empty(tmp_path: Path) -> None:
    storage, state = reopen(tmp_path / "a" / "b")
    assert state == PersistedState()
    assert (tmp_path / "a" / "b" / "wal").is_dir()
    storage.close()


def test_entries_and_hard_state_survive_reopen(tmp_path: Path) -> None:
    entries = ents(1, 50) + [Entry(2, 51, b"", EntryKind.CONF_CHANGE), Entry(2, 52, bytes(range(256)) * 40)]
    written(tmp_path, entries, HardState(term=2, vote=3, commit=40))
    storage, state = reopen(tmp_path)
    assert state == PersistedState(HardState(2, 3, 40), SnapshotMeta(), tuple(entries))
    assert state.entries[50].kind is EntryKind.CONF_CHANGE
    storage.append(ents(53, 60, term=2))  # appends continue after a reopen
    storage.sync()
    storage.close()
    assert reopen(tmp_path)[1].entries == tuple(entries + ents(53, 60, term=2))


def test_nothing_is_durable_before_sync_and_unchanged_hard_state_is_not_rewritten(tmp_path: Path) -> None:
    storage, _ = reopen(tmp_path)
    storage.set_hard_state(HardState(1, 1, 0))
    assert not (tmp_path / "hardstate").exists()
    storage.sync()
    inode = (tmp_path / "hardstate").stat().st_ino
    storage.set_hard_state(HardState(1, 1, 0))
    storage.append(ents(1, 3))
    storage.sync()
    assert (tmp_path / "hardstate").stat().st_ino == inode  # not replaced: it did not change
    storage.set_hard_state(HardState(1, 1, 3))
    storage.sync()
    assert (tmp_path / "hardstate").stat().st_ino != inode
    storage.close()
    assert reopen(tmp_path)[1].hard_state == HardState(1, 1, 3)


def test_calls_before_load_raise(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    with pytest.raises(StorageError, match="load"):
        storage.append(ents(1, 1))
    with pytest.raises(StorageError, match="load"):
        storage.sync()


# -- segments --------------------------------------------------------------------
def test_segments_roll_over_named_by_first_index(tmp_path: Path) -> None:
    entries = ents(1, 100)  # 35-byte records
    storage, _ = reopen(tmp_path, segment_bytes=200)
    for i in range(0, 100, 7):  # batches cross segment boundaries
        storage.append(entries[i : i + 7])
        storage.sync()
    storage.close()
    paths = segs(tmp_path)
    assert len(paths) > 10
    for path in paths:
        first = int(path.name[:16])
        assert path.name == f"{first:016d}.seg"
        assert path.read_bytes()[:8] == b"RKVWAL\x00\x00"
        assert struct.unpack_from("<Q", path.read_bytes(), 12)[0] == first
        assert path.stat().st_size <= 200 + REC + 10  # rolls once past the limit, never splits a record
    assert int(paths[0].name[:16]) == 1
    storage, state = reopen(tmp_path, segment_bytes=200)
    assert state.entries == tuple(entries)
    storage.append(ents(101, 130))
    storage.sync()
    storage.close()
    assert reopen(tmp_path)[1].entries == tuple(entries + ents(101, 130))


def test_one_large_batch_is_split_across_segments_at_record_boundaries(tmp_path: Path) -> None:
    written(tmp_path, ents(1, 60), segment_bytes=256)
    assert len(segs(tmp_path)) >= 8
    assert reopen(tmp_path)[1].entries == tuple(ents(1, 60))


# -- suffix truncation ----------------------------------------------------------
def test_append_over_a_suffix_survives_reopen(tmp_path: Path) -> None:
    written(tmp_path, ents(1, 10, term=1))
    written(tmp_path, ents(6, 8, term=2, size=30))
    _, state = reopen(tmp_path)
    assert state.entries == tuple(ents(1, 5, term=1) + ents(6, 8, term=2, size=30))


@pytest.mark.parametrize("at", [2, 11, 15, 16, 29, 30])
def test_truncation_crossing_segment_boundaries(tmp_path: Path, at: int) -> None:
    written(tmp_path, ents(1, 30, term=1), segment_bytes=150)
    before = segs(tmp_path)
    assert len(before) >= 6
    storage, _ = reopen(tmp_path, segment_bytes=150)
    storage.append(ents(at, at + 3, term=3))
    # a crash before sync: the old suffix is already gone, so no stale entry follows new ones
    crashed = tmp_path.parent / f"{tmp_path.name}-crashed"
    shutil.copytree(tmp_path, crashed)
    assert reopen(crashed)[1].entries == tuple(ents(1, at - 1, term=1) + ents(at, at + 3, term=3))
    storage.sync()
    storage.close()
    storage, state = reopen(tmp_path, segment_bytes=150)
    assert state.entries == tuple(ents(1, at - 1, term=1) + ents(at, at + 3, term=3))
    storage.append(ents(at + 4, at + 20, term=3))
    storage.sync()
    storage.close()
    assert reopen(tmp_path)[1].entries == tuple(ents(1, at - 1) + ents(at, at + 20, term=3))


def test_truncation_before_sync_leaves_no_stale_records(tmp_path: Path) -> None:
    written(tmp_path, ents(1, 20, term=1), segment_bytes=200)
    storage, _ = reopen(tmp_path, segment_bytes=200)
    storage.append(ents(4, 5, term=2))
    crashed = tmp_path.parent / "crashed"
    shutil.copytree(tmp_path, crashed)  # what the disk may hold: the cut was synced
    storage.close()
    _, state = reopen(crashed)
    assert state.entries in (tuple(ents(1, 3)), tuple(ents(1, 3) + ents(4, 5, term=2)))


# -- torn tails --------------------------------------------------------------------
@pytest.mark.parametrize("chop", [1, 3, 14, REC, REC + 9])
def test_torn_last_record_is_cut_and_appends_continue(tmp_path: Path, chop: int) -> None:
    entries = ents(1, 10)
    written(tmp_path, entries)
    seg = segs(tmp_path)[-1]
    size = seg.stat().st_size
    os.truncate(seg, size - chop)
    storage, state = reopen(tmp_path)
    assert state.entries == tuple(entries[:9])
    assert seg.stat().st_size == record_offset(entries, 10)  # physically cut at the last whole record
    storage.append(ents(10, 12, term=2))
    storage.sync()
    storage.close()
    assert reopen(tmp_path)[1].entries == tuple(entries[:9] + ents(10, 12, term=2))


@pytest.mark.parametrize("garbage", [b"\x07" * 5, b"\xff" * 24, bytes(range(100)), bytes(4096)])
def test_garbage_after_the_last_record_is_cut(tmp_path: Path, garbage: bytes) -> None:
    written(tmp_path, ents(1, 10))
    seg = segs(tmp_path)[-1]
    size = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(garbage)
    storage, state = reopen(tmp_path)
    assert state.entries == tuple(ents(1, 10))
    assert seg.stat().st_size == size
    storage.close()


def test_bad_checksum_on_the_final_record_is_a_torn_tail(tmp_path: Path) -> None:
    entries = ents(1, 10)
    written(tmp_path, entries)
    seg = segs(tmp_path)[-1]
    flip(seg, seg.stat().st_size - 2)
    assert reopen(tmp_path)[1].entries == tuple(entries[:9])


def test_segment_torn_while_being_created_is_removed(tmp_path: Path) -> None:
    written(tmp_path, ents(1, 10))
    torn = tmp_path / "wal" / f"{11:016d}.seg"
    torn.write_bytes(b"RKVWAL\x00")
    storage, state = reopen(tmp_path)
    assert state.entries == tuple(ents(1, 10)) and not torn.exists()
    storage.append(ents(11, 12))
    storage.sync()
    storage.close()
    assert reopen(tmp_path)[1].entries == tuple(ents(1, 12))


# -- corruption -----------------------------------------------------------------
@pytest.mark.parametrize("byte", [0, 3, 5, 10, 18, 24, 30])
def test_damaged_middle_record_raises_and_rewrites_nothing(tmp_path: Path, byte: int) -> None:
    entries = ents(1, 10, size=12)
    written(tmp_path, entries, HardState(1, 1, 3))
    seg = segs(tmp_path)[-1]
    offset = record_offset(entries, 5)
    flip(seg, offset + byte)  # crc, length, term, index, kind or data
    before = files(tmp_path)
    with pytest.raises(CorruptLog) as info:
        FileStorage(tmp_path).load()
    assert info.value.path == str(seg) and info.value.offset == offset
    assert str(seg) in str(info.value) and f"offset {offset}" in str(info.value)
    assert files(tmp_path) == before


def test_damaged_last_record_of_an_earlier_segment_raises(tmp_path: Path) -> None:
    written(tmp_path, ents(1, 40), segment_bytes=200)
    first_seg = segs(tmp_path)[0]
    size = first_seg.stat().st_size
    flip(first_seg, size - 3)
    before = files(tmp_path)
    with pytest.raises(CorruptLog) as info:
        FileStorage(tmp_path).load()
    assert info.value.path == str(first_seg)
    assert info.value.offset == size - REC - 10
    assert files(tmp_path) == before
    os.truncate(first_seg, size - 3)  # a short record is not a torn tail there either
    with pytest.raises(CorruptLog):
        FileStorage(tmp_path).load()


def test_missing_middle_segment_raises(tmp_path: Path) -> None:
    written(tmp_path, ents(1, 40), segment_bytes=200)
    segs(tmp_path)[2].unlink()
    with pytest.raises(CorruptLog, match="missing"):
        FileStorage(tmp_path).load()


def test_bad_segment_header_and_unknown_version_raise(tmp_path: Path) -> None:
    written(tmp_path, ents(1, 5))
    seg = segs(tmp_path)[0]
    raw = seg.read_bytes()
    seg.write_bytes(raw[:8] + struct.pack("<I", 2) + raw[12:])
    with pytest.raises(CorruptLog, match="version 2") as info:
        FileStorage(tmp_path).load()
    assert info.value.path == str(seg) and info.value.offset == 0
    seg.write_bytes(b"NOTAWAL!" + raw[8:])
    with pytest.raises(CorruptLog, match="magic"):
        FileStorage(tmp_path).load()
    seg.write_bytes(raw[:12] + struct.pack("<Q", 7) + raw[20:])
    with pytest.raises(CorruptLog, match="checksum"):
        FileStorage(tmp_path).load()


def test_commit_past_the_log_end_raises_without_cutting_anything(tmp_path: Path) -> None:
    written(tmp_path, ents(1, 10), HardState(1, 1, 10))
    os.truncate(segs(tmp_path)[-1], segs(tmp_path)[-1].stat().st_size - 4)
    before = files(tmp_path)
    with pytest.raises(CorruptLog, match="committed"):
        FileStorage(tmp_path).load()
    assert files(tmp_path) == before


# -- hard state file -----------------------------------------------------------
def test_leftover_temp_file_is_ignored(tmp_path: Path) -> None:
    written(tmp_path, ents(1, 3), HardState(4, 2, 3))
    (tmp_path / "hardstate.tmp").write_bytes(b"half-written garbage")
    (tmp_path / "snapmeta.tmp").write_bytes(b"")
    assert reopen(tmp_path)[1].hard_state == HardState(4, 2, 3)


@pytest.mark.parametrize("damage", ["flip", "short", "version"])
def test_damaged_hard_state_raises(tmp_path: Path, damage: str) -> None:
    written(tmp_path, ents(1, 3), HardState(4, 2, 3))
    path = tmp_path / "hardstate"
    raw = path.read_bytes()
    if damage == "flip":
        flip(path, 14)
    elif damage == "short":
        path.write_bytes(raw[:-1])
    else:
        path.write_bytes(raw[:8] + struct.pack("<I", 9) + raw[12:])
    with pytest.raises(CorruptLog, match="version 9" if damage == "version" else "hardstate") as info:
        FileStorage(tmp_path).load()
    assert info.value.path == str(path)


def test_hard_state_file_format(tmp_path: Path) -> None:
    written(tmp_path, ents(1, 3), HardState(7, 2, 3))
    raw = (tmp_path / "hardstate").read_bytes()
    assert struct.unpack("<8sIQQQ", raw[:-4]) == (b"RKVHARD\x00", 1, 7, 2, 3)
    assert struct.unpack("<I", raw[-4:])[0] == crc32c.crc32c(raw[:-4])


# -- compaction -------------------------------------------------------------------
def test_compact_deletes_covered_segments_and_load_skips_covered_entries(tmp_path: Path) -> None:
    written(tmp_path, ents(1, 60), HardState(1, 1, 40), segment_bytes=200)
    storage, _ = reopen(tmp_path, segment_bytes=200)
    before = segs(tmp_path)
    storage.compact(SnapshotMeta(30, 1))
    assert segs(tmp_path) == before  # durable only on sync
    storage.sync()
    after = segs(tmp_path)
    firsts = [int(p.name[:16]) for p in after]
    assert firsts[0] <= 31 < (firsts[1] if len(firsts) > 1 else 61)  # the straddling segment stays
    assert len(after) < len(before)
    storage.close()
    storage, state = reopen(tmp_path, segment_bytes=200)
    assert state.snapshot == SnapshotMeta(30, 1)
    assert state.entries == tuple(ents(31, 60))
    with pytest.raises(ValueError, match="compacted"):
        storage.append(ents(30, 31))
    storage.append(ents(45, 46, term=2))
    storage.sync()
    storage.close()
    assert reopen(tmp_path)[1].entries == tuple(ents(31, 44) + ents(45, 46, term=2))


def test_compact_past_the_end_then_append(tmp_path: Path) -> None:
    written(tmp_path, ents(1, 10))
    storage, _ = reopen(tmp_path)
    storage.compact(SnapshotMeta(20, 3))
    with pytest.raises(ValueError, match="gap"):
        storage.append(ents(22, 22))
    storage.append(ents(21, 25, term=3))
    storage.set_hard_state(HardState(3, 1, 22))
    storage.sync()
    assert [p.name for p in segs(tmp_path)] == [f"{21:016d}.seg"]
    storage.close()
    assert reopen(tmp_path)[1] == PersistedState(HardState(3, 1, 22), SnapshotMeta(20, 3), tuple(ents(21, 25, term=3)))


def test_covered_segment_left_by_a_crash_is_skipped_and_deleted(tmp_path: Path) -> None:
    written(tmp_path, ents(1, 10))
    old = segs(tmp_path)[0]
    saved = old.read_bytes()
    storage, _ = reopen(tmp_path)
    storage.compact(SnapshotMeta(20, 3))
    storage.append(ents(21, 22, term=3))
    storage.sync()
    storage.close()
    old.write_bytes(saved[:-3])  # as if the crash came before the deletion; its tail is even torn
    storage, state = reopen(tmp_path)
    assert state.snapshot == SnapshotMeta(20, 3) and state.entries == tuple(ents(21, 22, term=3))
    storage.sync()
    assert not old.exists()
    storage.close()


# -- argument checks ---------------------------------------------------------------
def test_append_argument_checks_write_nothing(tmp_path: Path) -> None:
    storage, _ = reopen(tmp_path)
    storage.append(ents(1, 5))
    storage.sync()
    before = files(tmp_path)
    with pytest.raises(ValueError, match="gap"):
        storage.append(ents(7, 8))
    with pytest.raises(ValueError, match="contiguous"):
        storage.append([Entry(1, 6), Entry(1, 8)])
    with pytest.raises(ValueError, match="contiguous"):
        storage.append([Entry(1, 3), Entry(1, 3)])  # would have truncated: checked first
    with pytest.raises(ValueError):
        storage.append([Entry(-1, 6)])
    with pytest.raises(ValueError, match="kind"):
        storage.append([Entry(1, 6, b"", 7)])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        storage.set_hard_state(HardState(-1, 0, 0))
    storage.sync()
    assert files(tmp_path) == before
    storage.set_hard_state(HardState(1, 1, 6))
    with pytest.raises(ValueError, match="past the last entry"):
        storage.sync()  # load() would call that log corrupt, so it is never written
    assert files(tmp_path) == before
    storage.set_hard_state(HardState(1, 1, 3))
    storage.sync()
    with pytest.raises(ValueError, match="committed"):
        storage.append(ents(3, 4, term=2))
    storage.close()


def test_failed_fsync_poisons_until_reload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage, _ = reopen(tmp_path)
    storage.append(ents(1, 3))
    storage.sync()
    storage.append(ents(4, 5))

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(StorageError, match="sync failed"):
        storage.sync()
    monkeypatch.undo()
    with pytest.raises(StorageError, match="unknown state"):
        storage.append(ents(6, 6))
    state = storage.load()
    assert state.entries[:3] == tuple(ents(1, 3))
    storage.close()


# -- crash states -----------------------------------------------------------------
def test_unsynced_appends_cut_anywhere_leave_a_valid_prefix(tmp_path: Path) -> None:
    data = tmp_path / "data"
    storage, _ = reopen(data)
    synced = ents(1, 8)
    storage.append(synced)
    storage.set_hard_state(HardState(1, 1, 8))
    storage.sync()
    seg = segs(data)[-1]
    synced_size = seg.stat().st_size
    pending = ents(9, 14, size=7)
    storage.append(pending)
    storage.append(ents(15, 16, size=3))
    pending += ents(15, 16, size=3)
    full = seg.read_bytes()
    storage.close()  # no sync: a crash may keep any prefix of the unsynced bytes
    boundaries = {record_offset(synced + pending, i): i - 1 for i in range(9, 18)}
    boundaries[len(full)] = 16
    for cut in range(synced_size, len(full) + 1):
        crashed = tmp_path / f"cut{cut}"
        shutil.copytree(data, crashed)
        os.truncate(crashed / "wal" / seg.name, cut)
        _, state = reopen(crashed)
        last = max(i for off, i in boundaries.items() if off <= cut)
        assert state.entries == tuple(synced + pending)[:last]
        assert state.hard_state == HardState(1, 1, 8)
        shutil.rmtree(crashed)
    # the size reached the disk but the data did not: zeros
    crashed = tmp_path / "zeroed"
    shutil.copytree(data, crashed)
    (crashed / "wal" / seg.name).write_bytes(full[:synced_size] + bytes(len(full) - synced_size))
    assert reopen(crashed)[1].entries == tuple(synced)


def test_crash_after_append_keeps_every_synced_entry(tmp_path: Path) -> None:
    data = tmp_path / "data"
    storage, _ = reopen(data, segment_bytes=300)
    storage.append(ents(1, 20))
    storage.sync()
    storage.append(ents(21, 40))  # rolls segments, unsynced
    crashed = tmp_path / "crashed"
    shutil.copytree(data, crashed)
    storage.close()
    entries = reopen(crashed)[1].entries
    assert entries[:20] == tuple(ents(1, 20))
    assert entries == tuple(ents(1, 40))[: len(entries)]


# -- agreement with the in-memory twin ------------------------------------------
@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_memory_storage(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    memory = MemoryStorage()
    memory.load()
    disk, _ = reopen(tmp_path, segment_bytes=rng.choice([150, 400, 4096]))
    term, commit, snap, last = 1, 0, 0, 0
    terms: dict[int, int] = {}  # index -> term of the log both hold (snapshot included)
    has_data = False  # the snapshot position has its data stored (save_snapshot, not compact)
    for step in range(300):
        op = rng.random()
        if op < 0.5:
            # committed entries are never overwritten (Raft), so start above commit
            low = max(commit, snap) + 1
            first = rng.randint(max(low, last - 6), last + 1) if last + 1 >= low else last + 1
            if first <= last:
                term += 1
            batch = [
                Entry(term, i, rng.randbytes(rng.randint(0, 40)), rng.choice(list(EntryKind)))
                for i in range(first, first + rng.randint(1, 12))
            ]
            memory.append(batch)
            disk.append(batch)
            last = batch[-1].index
            terms = {i: t for i, t in terms.items() if i < first} | {e.index: e.term for e in batch}
        elif op < 0.56:
            # a snapshot of our own log (matching term), or a leader's (any term, maybe past the end)
            index = rng.randint(max(snap, 1), last + 3)
            meta = SnapshotMeta(index, terms.get(index, term) if rng.random() < 0.7 else rng.randint(1, term + 1))
            data = rng.randbytes(rng.randint(0, 30))
            outcomes = []
            for storage in (memory, disk):
                try:
                    storage.save_snapshot(meta, data)
                    outcomes.append("ok")
                except ValueError:
                    outcomes.append("refused")
            assert outcomes[0] == outcomes[1], f"seed {seed} step {step}: {outcomes}"
            if outcomes[0] == "ok" and (index > snap or not has_data):
                if terms.get(index) != meta.term:
                    last, terms = index, {}
                snap, last, has_data = index, max(last, index), True
                terms = {i: t for i, t in terms.items() if i > index} | {index: meta.term}
        elif op < 0.7:
            commit = rng.randint(commit, last)
            hs = HardState(term, rng.randint(0, 3), commit)
            memory.set_hard_state(hs)
            disk.set_hard_state(hs)
        elif op < 0.78:
            index = rng.randint(snap, last + 3)
            meta = SnapshotMeta(index, term)
            memory.compact(meta)
            disk.compact(meta)
            if index > snap:
                snap, last, has_data = index, max(last, index), False
                terms = {i: t for i, t in terms.items() if i > index} | {index: term}
        elif op < 0.95:
            memory.sync()
            disk.sync()
        else:
            memory.sync()
            disk.sync()
            disk.close()
            memory.crash()
            disk = FileStorage(tmp_path, segment_bytes=disk.segment_bytes)
            assert disk.load() == memory.load(), f"seed {seed} step {step}"
    memory.sync()
    disk.sync()
    disk.close()
    assert FileStorage(tmp_path).load() == memory.load()


def test_a_data_directory_is_locked_to_one_storage(tmp_path: Path) -> None:
    first = FileStorage(tmp_path)
    first.load()
    first.append(ents(1, 3))
    first.sync()
    second = FileStorage(tmp_path, lock_timeout=0.2)
    with pytest.raises(StorageError, match="in use"):
        second.load()
    first.append(ents(4, 5))  # the refused one changed nothing
    first.sync()
    first.close()
    assert [e.index for e in second.load().entries] == [1, 2, 3, 4, 5]
    second.close()
