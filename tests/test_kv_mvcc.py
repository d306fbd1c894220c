"""kv.mvcc: revisions, history, ranges, compaction and events, against etcd's rules
and against a brute-force model."""

from __future__ import annotations

import random

import pytest

from kv.codec import decode, encode
from kv.errors import Compacted, FutureRevision, InvalidRequest
from kv.mvcc import MVCCStore
from kv.responses import KeyValue

ALL = (b"\0", b"\0")


def test_empty_store_is_at_revision_1_and_first_put_gets_2():
    s = MVCCStore()
    assert s.revision == 1 and s.compact_revision == 0
    assert s.put(b"a", b"1") is None
    assert s.revision == 2
    assert s.get(b"a") == KeyValue(b"a", b"1", 2, 2, 1, 0)


def test_versions_and_create_revision():
    s = MVCCStore()
    s.put(b"a", b"1")
    s.put(b"b", b"x", lease=5)
    prev = s.put(b"a", "2")
    assert prev[0] == 2  # previous record's mod revision
    assert s.get(b"a") == KeyValue(b"a", "2", 2, 4, 2, 0)
    assert s.get(b"b") == KeyValue(b"b", b"x", 3, 3, 1, 5)


def test_delete_makes_tombstone_and_recreate_resets_version_and_create():
    s = MVCCStore()
    s.put(b"a", b"1")  # 2
    s.put(b"a", b"2")  # 3
    deleted = s.delete_range(b"a")  # 4
    assert [k for k, _ in deleted] == [b"a"] and s.revision == 4
    assert s.get(b"a") is None
    assert s.range(*ALL) == []
    s.put(b"a", b"3")  # 5
    assert s.get(b"a") == KeyValue(b"a", b"3", 5, 5, 1, 0)
    # history is intact
    assert s.get(b"a", 3) == KeyValue(b"a", b"2", 2, 3, 2, 0)
    assert s.get(b"a", 4) is None
    assert s.get(b"a", 1) is None


def test_delete_of_nothing_takes_no_revision():
    s = MVCCStore()
    s.put(b"a", b"1")
    assert s.delete_range(b"b") == []
    assert s.delete_range(b"b", b"z") == []
    s.delete_range(b"a")
    assert s.delete_range(b"a") == []  # already a tombstone
    assert s.revision == 3


def test_range_is_bytewise_ordered_and_end_exclusive():
    s = MVCCStore()
    for k in [b"b", b"a", b"\xff", b"ab", b"a\x00", b"B", "é".encode()]:
        s.put(k, k)
    keys = [kv.key for kv in s.range(*ALL)]
    assert keys == sorted(keys) == [b"B", b"a", b"a\x00", b"ab", b"b", "é".encode(), b"\xff"]
    assert [kv.key for kv in s.range(b"a", b"b")] == [b"a", b"a\x00", b"ab"]
    assert [kv.key for kv in s.range(b"ab", b"\0")] == [b"ab", b"b", "é".encode(), b"\xff"]
    assert s.range(b"b", b"a") == []  # end before start: empty
    assert s.range(b"b", b"b") == []
    assert [kv.key for kv in s.range(b"b")] == [b"b"]
    assert s.range(b"zz") == []


def test_write_group_shares_one_revision_and_empty_group_takes_none():
    s = MVCCStore()
    s.put(b"a", b"0")  # 2
    s.begin()
    s.put(b"b", b"1")
    s.put(b"c", b"1")
    assert [k for k, _ in s.range_items(b"a", b"\0")] == [b"a", b"b", b"c"]  # sees its own puts
    s.delete_range(b"a")
    assert s.revision == 2 and s.pending_revision == 3
    assert s.end() == 3
    assert s.get(b"b").mod_revision == s.get(b"c").mod_revision == 3
    assert s.get(b"a") is None and s.get(b"a", 2) is not None
    s.begin()
    assert s.delete_range(b"zzz") == []
    assert s.end() == 3


def test_same_key_twice_in_one_revision_is_refused():
    s = MVCCStore()
    s.begin()
    s.put(b"a", b"1")
    with pytest.raises(RuntimeError):
        s.put(b"a", b"2")
    s.end()


def test_reads_at_old_revisions():
    s = MVCCStore()
    s.put(b"a", b"1")  # 2
    s.put(b"b", b"1")  # 3
    s.put(b"a", b"2")  # 4
    s.delete_range(b"b")  # 5
    assert [(kv.key, kv.value) for kv in s.range(*ALL, revision=3)] == [(b"a", b"1"), (b"b", b"1")]
    assert [(kv.key, kv.value) for kv in s.range(*ALL, revision=4)] == [(b"a", b"2"), (b"b", b"1")]
    assert [(kv.key, kv.value) for kv in s.range(*ALL, revision=5)] == [(b"a", b"2")]
    assert s.range(*ALL, revision=1) == []
    with pytest.raises(FutureRevision):
        s.range(*ALL, revision=6)


def test_compaction():
    s = MVCCStore()
    s.put(b"a", b"1")  # 2
    s.put(b"a", b"2")  # 3
    s.put(b"b", b"1")  # 4
    s.delete_range(b"b")  # 5
    s.put(b"c", b"1")  # 6
    s.compact(5)
    assert s.compact_revision == 5
    with pytest.raises(Compacted) as info:
        s.get(b"a", 4)
    assert info.value.compact_revision == 5
    # at and after the compaction point reads stay exact
    assert [(kv.key, kv.value) for kv in s.range(*ALL, revision=5)] == [(b"a", b"2")]
    assert [(kv.key, kv.value) for kv in s.range(*ALL)] == [(b"a", b"2"), (b"c", b"1")]
    assert s.get(b"a", 5) == KeyValue(b"a", b"2", 2, 3, 2, 0)
    # the tombstoned key is gone entirely; the old version of a is gone
    assert b"b" not in s._index and b"b" not in s._keys
    assert len(s._index[b"a"]) == 1
    with pytest.raises(Compacted):
        s.compact(5)
    with pytest.raises(Compacted):
        s.compact(3)
    with pytest.raises(FutureRevision):
        s.compact(7)
    s.compact(6)
    assert s.range(*ALL, revision=6)[1].key == b"c"


def test_compaction_keeps_later_history():
    s = MVCCStore()
    for i in range(10):
        s.put(b"k", str(i))  # revisions 2..11
    s.compact(5)
    assert [s.get(b"k", r).value for r in range(5, 12)] == [str(i) for i in range(3, 10)]
    assert len(s._index[b"k"]) == 7


# --- events -------------------------------------------------------------------


def test_changes_since():
    s = MVCCStore()
    s.put(b"a", b"1")  # 2
    s.put(b"b", b"1")  # 3
    s.begin()  # 4: c then a, in that order
    s.put(b"c", b"1")
    s.put(b"a", b"2")
    s.end()
    s.delete_range(b"a", b"c")  # 5: a, b
    evs = s.changes_since(1, *ALL)
    assert [(e.type, e.revision, e.kv.key) for e in evs] == [
        ("put", 2, b"a"),
        ("put", 3, b"b"),
        ("put", 4, b"c"),
        ("put", 4, b"a"),
        ("delete", 5, b"a"),
        ("delete", 5, b"b"),
    ]
    assert evs[0].prev_kv is None
    assert evs[3].prev_kv == KeyValue(b"a", b"1", 2, 2, 1, 0)
    assert evs[3].kv == KeyValue(b"a", b"2", 2, 4, 2, 0)
    assert evs[4].kv == KeyValue(b"a", b"", 0, 5, 0, 0)
    assert evs[4].prev_kv == KeyValue(b"a", b"2", 2, 4, 2, 0)
    assert [e.revision for e in s.changes_since(4, *ALL)] == [4, 4, 5, 5]
    assert [(e.type, e.revision) for e in s.changes_since(1, b"a")] == [("put", 2), ("put", 4), ("delete", 5)]
    assert [e.kv.key for e in s.changes_since(1, b"b", b"c")] == [b"b", b"b"]
    assert s.changes_since(6, *ALL) == []
    with pytest.raises(InvalidRequest):
        s.changes_since(0, *ALL)


def test_changes_since_after_compaction():
    s = MVCCStore()
    s.put(b"a", b"1")  # 2
    s.put(b"a", b"2")  # 3
    s.delete_range(b"a")  # 4
    s.put(b"a", b"3")  # 5
    s.compact(3)
    with pytest.raises(Compacted) as info:
        s.changes_since(3, *ALL)
    assert info.value.compact_revision == 3
    evs = s.changes_since(4, *ALL)
    assert [(e.type, e.revision) for e in evs] == [("delete", 4), ("put", 5)]
    assert evs[0].prev_kv == KeyValue(b"a", b"2", 2, 3, 2, 0)  # survived compaction
    assert evs[1].prev_kv is None
    s.compact(5)
    assert s.changes_since(6, *ALL) == []


def test_plain_round_trip():
    s = MVCCStore()
    s.put(b"a", b"1", lease=3)
    s.put(b"b", "two")
    s.delete_range(b"a")
    s.put(b"c", b"3")
    s.compact(3)
    plain = s.to_plain()
    t = MVCCStore.from_plain(decode(encode(plain)))
    assert t.to_plain() == plain
    assert encode(t.to_plain()) == encode(plain)
    for store in (s, t):
        store.put(b"a", b"again")
    assert s.to_plain() == t.to_plain()


@pytest.mark.parametrize(
    "plain",
    [None, [1, 0], [1, 0, [b"a"]], [1, 0, [b"a", [1, 2, 3]]], [1, 0, [b"b", [2, 0, 2, 1, b"", 0], b"a", [3, 0, 3, 1, b"", 0]]]],
)
def test_from_plain_rejects_malformed(plain):
    with pytest.raises(InvalidRequest):
        MVCCStore.from_plain(plain)


# --- against a model ---------------------------------------------------------------


class Model:
    """The obvious, slow MVCC: a full copy of the state per revision."""

    def __init__(self):
        self.states = {1: {}}  # revision -> {key: (value, create, mod, version, lease)}
        self.rev = 1
        self.compacted = 0

    def write(self, changes):
        """changes: list of (key, value or None for delete, lease)."""
        cur = dict(self.states[self.rev])
        rev = self.rev + 1
        changed = False
        for key, value, lease in changes:
            if value is None:
                if key in cur:
                    del cur[key]
                    changed = True
            else:
                old = cur.get(key)
                create, version = (old[1], old[3] + 1) if old else (rev, 1)
                cur[key] = (value, create, rev, version, lease)
                changed = True
        if changed:
            self.rev = rev
            self.states[rev] = cur

    def range(self, lo, hi, rev):
        state = self.states[rev or self.rev]
        return [
            KeyValue(k, *state[k])
            for k in sorted(state)
            if (k == lo if hi is None else lo <= k and (hi == b"\0" or k < hi))
        ]


@pytest.mark.parametrize("seed", range(12))
def test_against_model(seed):
    rng = random.Random(seed)
    keys = [bytes([c]) for c in b"abcdefgh"] + [b"a\x00", b"\xff"]
    s, m = MVCCStore(), Model()
    for step in range(400):
        r = rng.random()
        if r < 0.45:
            k, v, lease = rng.choice(keys), rng.choice([b"x", "y", str(step)]), rng.choice([0, 0, 9])
            s.put(k, v, lease)
            m.write([(k, v, lease)])
        elif r < 0.6:
            lo = rng.choice(keys)
            hi = rng.choice([None, b"\0", rng.choice(keys)])
            s.delete_range(lo, hi)
            deleted = [kv.key for kv in m.range(lo, hi, 0)]
            m.write([(k, None, 0) for k in deleted])
        elif r < 0.7:
            # a group of distinct keys
            group = rng.sample(keys, rng.randint(0, 4))
            s.begin()
            changes = []
            for k in group:
                if rng.random() < 0.3:
                    s.delete_range(k)
                    changes.append((k, None, 0))
                else:
                    s.put(k, b"g", 0)
                    changes.append((k, b"g", 0))
            s.end()
            m.write(changes)
        elif r < 0.73 and m.rev > m.compacted + 1:
            c = rng.randint(m.compacted + 1, m.rev)
            s.compact(c)
            m.compacted = c
        assert s.revision == m.rev
        for _ in range(3):
            rev = rng.choice([0, rng.randint(max(1, m.compacted), m.rev)])
            lo = rng.choice(keys)
            hi = rng.choice([None, b"\0", rng.choice(keys)])
            assert s.range(lo, hi, rev) == m.range(lo, hi, rev), (step, lo, hi, rev)
        if m.compacted > 1:
            with pytest.raises(Compacted):
                s.range(*ALL, revision=m.compacted - 1)
    # events replay the model's history exactly
    start = m.compacted + 1
    evs = s.changes_since(start, *ALL)
    replay = dict(m.states[m.compacted]) if m.compacted else {}
    for ev in evs:
        if ev.type == "put":
            assert ev.prev_kv == (KeyValue(ev.kv.key, *replay[ev.kv.key]) if ev.kv.key in replay else None)
            replay[ev.kv.key] = (ev.kv.value, ev.kv.create_revision, ev.kv.mod_revision, ev.kv.version, ev.kv.lease)
        else:
            assert ev.prev_kv == KeyValue(ev.kv.key, *replay[ev.kv.key])
            del replay[ev.kv.key]
    assert replay == m.states[m.rev]


def test_frozen_view_is_unaffected_by_later_writes_and_compaction():
    import random as _random

    rng = _random.Random(5)
    s = MVCCStore()
    keys = [f"k{i}".encode() for i in range(40)]
    for _ in range(300):
        k = rng.choice(keys)
        if rng.random() < 0.2:
            s.delete_range(k)
        else:
            s.put(k, str(rng.random()))
    expected = s.to_plain()
    build = s.freeze()
    for _ in range(300):  # the store moves on: puts, deletes, new keys, compactions
        k = rng.choice(keys + [f"new{i}".encode() for i in range(10)])
        if rng.random() < 0.2:
            s.delete_range(k)
        else:
            s.put(k, "later")
        if rng.random() < 0.05 and s.revision - 3 > s.compact_revision:
            s.compact(s.revision - 3)
    assert build() == expected
    assert MVCCStore.from_plain(build()).to_plain() == expected
