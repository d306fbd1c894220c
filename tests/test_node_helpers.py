"""Unit tests of the replica's snapshot helpers (no Ray)."""

from __future__ import annotations

from kv import encode
from raft_actors.node import _encode_built, _release


def _plain():
    flat = []
    for i in range(10_000):
        flat += [f"k{i:05d}".encode(), [i, 0, i, 1, b"v" * 10, 0]]
    return ["magic", 3, 7, 1, 0.5, [9, 0, flat], [["session", [1, 2]]], [[1, 2000, 5]], 4]


def test_encode_built_encodes_what_it_builds_and_releases_it():
    made = []

    def build():
        made.append(_plain())
        return made[-1]

    assert _encode_built(build) == encode(_plain())
    assert made[0] == []  # emptied slice by slice once encoded


def test_release_empties_nested_lists_down_to_the_large_ones():
    plain = _plain()
    store = plain[5]
    flat = store[2]
    _release(plain, part=64)
    assert plain == [] and store == [] and flat == []
