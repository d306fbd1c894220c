"""Configurations on disk: the CONF entry and membership encodings, the version 2
snapshot files and snapmeta that carry the configuration (and version 1 files
still read), MemoryStorage, and the configuration history kept by `RaftLog`."""

from __future__ import annotations

import struct
from pathlib import Path

import crc32c
import pytest

from kv.errors import CorruptLog
from raft_actors.log import RaftLog
from raft_actors.membership import (
    ConfChange,
    ConfChangeEntry,
    ConfChangeRefused,
    ConfChangeType,
    Membership,
    Refusal,
    decode_conf_entry,
    encode_conf_entry,
)
from raft_actors.storage import MemoryStorage
from raft_actors.types import Entry, EntryKind, HardState, PersistedState, SnapshotMeta
from raft_actors.wal import SNAPSHOT_FORMAT_VERSION, FileStorage

CONF = Membership((1, 2, 3), (9,))


def ents(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, f"{term}:{i}".encode()) for i in range(first, last + 1)]


def conf_entry(term: int, index: int, change: ConfChange, m: Membership) -> Entry:
    return Entry(term, index, encode_conf_entry(change, m), EntryKind.CONF)


def with_log(path: Path, entries: list[Entry], commit: int) -> FileStorage:
    storage = FileStorage(path)
    storage.load()
    storage.append(entries)
    storage.set_hard_state(HardState(entries[-1].term, 1, commit))
    storage.sync()
    return storage


# -- encodings ------------------------------------------------------------------------
def test_conf_entry_encoding_is_explicit_and_round_trips() -> None:
    data = encode_conf_entry(ConfChange.remove(3), Membership((2, 1), (9,)))
    assert data == struct.pack("<BBQHHQQQ", 1, 3, 3, 2, 1, 1, 2, 9)
    assert decode_conf_entry(data) == ConfChangeEntry(ConfChange(ConfChangeType.REMOVE, 3), Membership((1, 2), (9,)))
    assert Membership.decode(Membership().encode()) == Membership()


@pytest.mark.parametrize("data, problem", [
    (b"", "too short"),
    (struct.pack("<BBQHH", 2, 1, 4, 0, 0), "version 2"),
    (struct.pack("<BBQHH", 1, 9, 4, 0, 0), "unknown change type"),
    (struct.pack("<BBQHHQ", 1, 1, 4, 2, 0, 1), "2 voters and 0 learners has 12 bytes"),
    (struct.pack("<BBQHHQQ", 1, 1, 4, 2, 0, 2, 1), "unsorted"),
    (struct.pack("<BBQHHQQ", 1, 1, 4, 1, 1, 2, 2), "twice"),
    (struct.pack("<BBQHHQ", 1, 1, 4, 1, 0, 0), "positive"),
])
def test_bad_conf_entries_are_refused(data: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode_conf_entry(data)


def test_membership_apply_rules() -> None:
    m = Membership((1, 2))
    m = m.apply(ConfChange.add_learner(3))
    assert m == Membership((1, 2), (3,)) and m.members == (1, 2, 3) and m.quorum == 2
    m = m.apply(ConfChange.promote(3))
    assert m == Membership((1, 2, 3)) and m.quorum == 2
    m = m.apply(ConfChange.remove(1)).apply(ConfChange.remove(2))
    assert m == Membership((3,)) and m.quorum == 1
    for change, reason in [(ConfChange.remove(3), Refusal.LAST_VOTER), (ConfChange.promote(3), Refusal.NOT_LEARNER),
                           (ConfChange.add_learner(3), Refusal.ALREADY_MEMBER), (ConfChange.remove(4), Refusal.NOT_MEMBER)]:
        with pytest.raises(ConfChangeRefused) as info:
            m.apply(change)
        assert info.value.reason == reason


# -- snapshot files and snapmeta --------------------------------------------------------
def test_snapshots_keep_their_configuration_across_restarts(tmp_path: Path) -> None:
    storage = with_log(tmp_path, ents(1, 10), commit=10)
    storage.save_snapshot(SnapshotMeta(6, 1, CONF), b"six")
    storage.close()
    storage = FileStorage(tmp_path)
    state = storage.load()
    assert state.snapshot == SnapshotMeta(6, 1, CONF) and state.snapshot_data == b"six"
    # compact() records the position alone: snapmeta carries the configuration too
    later = Membership((1, 2), (9,))
    storage.compact(SnapshotMeta(8, 1, later))
    storage.sync()
    storage.close()
    raw = (tmp_path / "snapmeta").read_bytes()
    assert struct.unpack_from("<8sIQQI", raw) == (b"RKVSNAP\x00", SNAPSHOT_FORMAT_VERSION, 8, 1, len(later.encode()))
    state = FileStorage(tmp_path).load()
    assert state.snapshot == SnapshotMeta(8, 1, later) and state.snapshot_data is None


def test_a_snapshot_without_a_configuration_is_stored_as_not_recorded(tmp_path: Path) -> None:
    storage = with_log(tmp_path, ents(1, 5), commit=5)
    storage.save_snapshot(SnapshotMeta(3, 1), b"x")
    storage.close()
    assert FileStorage(tmp_path).load().snapshot == SnapshotMeta(3, 1, None)


def _v1_snapmeta(index: int, term: int) -> bytes:
    raw = struct.pack("<8sIQQ", b"RKVSNAP\x00", 1, index, term)
    return raw + struct.pack("<I", crc32c.crc32c(raw))


def _v1_snapshot_file(index: int, term: int, data: bytes) -> bytes:
    header = struct.pack("<8sIQQQI", b"RKVSNAPD", 1, index, term, len(data), crc32c.crc32c(data))
    return header + struct.pack("<I", crc32c.crc32c(header)) + data


def test_version_1_snapshot_files_are_still_read(tmp_path: Path) -> None:
    storage = with_log(tmp_path, ents(1, 10), commit=10)
    storage.save_snapshot(SnapshotMeta(6, 1, CONF), b"new format")
    storage.close()
    # What a raftkv release before membership changes wrote at the same point:
    (tmp_path / "snapmeta").write_bytes(_v1_snapmeta(6, 1))
    (tmp_path / f"snapshot-{6:016d}.snap").write_bytes(_v1_snapshot_file(6, 1, b"old format"))
    storage = FileStorage(tmp_path)
    state = storage.load()
    assert state.snapshot == SnapshotMeta(6, 1, None) and state.snapshot_data == b"old format"
    assert state.entries == tuple(ents(7, 10))
    # New saves write version 2.
    storage.save_snapshot(SnapshotMeta(8, 1, CONF), b"eight")
    storage.close()
    assert FileStorage(tmp_path).load().snapshot == SnapshotMeta(8, 1, CONF)


def test_a_version_1_snapmeta_beside_a_version_2_file_takes_the_files_configuration(tmp_path: Path) -> None:
    storage = with_log(tmp_path, ents(1, 10), commit=10)
    storage.save_snapshot(SnapshotMeta(6, 1, CONF), b"six")
    storage.close()
    (tmp_path / "snapmeta").write_bytes(_v1_snapmeta(6, 1))
    assert FileStorage(tmp_path).load().snapshot == SnapshotMeta(6, 1, CONF)


@pytest.mark.parametrize("damage", ["conf byte", "conf length", "snapmeta conf"])
def test_a_damaged_configuration_raises_corrupt_log(tmp_path: Path, damage: str) -> None:
    storage = with_log(tmp_path, ents(1, 10), commit=10)
    storage.save_snapshot(SnapshotMeta(6, 1, CONF), b"six")
    storage.close()
    path = tmp_path / (f"snapshot-{6:016d}.snap" if damage != "snapmeta conf" else "snapmeta")
    raw = bytearray(path.read_bytes())
    if damage == "conf byte":
        raw[44 + 5] ^= 0x01  # a voter id
    elif damage == "conf length":
        raw[40:44] = struct.pack("<I", 10_000)
    else:
        raw[28 + 4 + 5] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptLog) as info:
        FileStorage(tmp_path).load()
    assert info.value.path == str(path)


def test_a_prepared_file_without_the_configuration_is_written_again_by_save(tmp_path: Path) -> None:
    storage = with_log(tmp_path, ents(1, 10), commit=10)
    storage.prepare_snapshot(SnapshotMeta(6, 1), b"six")  # (the meta a driver built by hand)
    storage.save_snapshot(SnapshotMeta(6, 1, CONF), b"six")  # (what core.compact returned)
    storage.close()
    assert FileStorage(tmp_path).load().snapshot == SnapshotMeta(6, 1, CONF)


def test_conf_entries_go_through_the_wal_and_memory_storage_unchanged(tmp_path: Path) -> None:
    entries = [conf_entry(1, 1, ConfChange(ConfChangeType.BOOTSTRAP, 0), Membership((1, 2, 3))), *ents(2, 3),
               conf_entry(1, 4, ConfChange.add_learner(4), Membership((1, 2, 3), (4,)))]
    with_log(tmp_path, entries, commit=4).close()
    mem = MemoryStorage()
    mem.load()
    mem.append(entries)
    mem.set_hard_state(HardState(1, 1, 4))
    mem.sync()
    mem.save_snapshot(SnapshotMeta(2, 1, Membership((1, 2, 3))), b"two")
    mem.crash()
    assert FileStorage(tmp_path).load().entries == tuple(entries)
    state = mem.load()
    assert state.snapshot.conf == Membership((1, 2, 3)) and state.entries == tuple(entries[2:])


# -- the configuration history in RaftLog ---------------------------------------------
def test_raft_log_tracks_the_configuration_through_appends_truncation_compaction_and_restore() -> None:
    initial = Membership((1, 2, 3))
    lg = RaftLog(PersistedState(HardState(1, 0, 0)), initial=initial)
    assert (lg.conf, lg.conf_index, lg.conf_recorded) == (initial, 0, False)
    a = Membership((1, 2, 3), (4,))
    b = Membership((1, 2, 3, 4))
    lg.append([conf_entry(1, 1, ConfChange(ConfChangeType.BOOTSTRAP, 0), initial), Entry(1, 2, b"x"),
               conf_entry(1, 3, ConfChange.add_learner(4), a), Entry(1, 4, b"y"),
               conf_entry(1, 5, ConfChange.promote(4), b)])
    assert (lg.conf, lg.conf_index, lg.prev_conf, lg.conf_recorded) == (b, 5, a, True)
    assert [lg.conf_at(i) for i in range(6)] == [initial, initial, initial, a, a, b]
    lg.commit_to(3)
    assert lg.pending_confs() == 1
    lg.append([Entry(2, 5, b"z")])  # the promotion is truncated: back to `a`
    assert (lg.conf, lg.conf_index) == (a, 3)
    lg.applied_to(3)
    lg.compact(3, 1)
    assert (lg.conf, lg.conf_index, lg.conf_at(3)) == (a, 3, a) and lg.conf_recorded
    with pytest.raises(IndexError):
        lg.conf_at(2)
    # A snapshot past the log replaces it, configuration included.
    c = Membership((1, 2), (4,))
    assert lg.restore(9, 3, c) is False
    assert (lg.conf, lg.conf_index) == (c, 9)
