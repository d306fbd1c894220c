"""The chunked sorted key set against a plain sorted list."""

from __future__ import annotations

import random
from bisect import bisect_left

from hypothesis import given, settings
from hypothesis import strategies as st

from kv import sortedkeys
from kv.sortedkeys import SortedKeys


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=3), max_size=300), st.binary(max_size=3), st.binary(max_size=3))
def test_matches_a_sorted_list(keys, a, b):
    old, sortedkeys.CHUNK = sortedkeys.CHUNK, 4  # tiny chunks: splits happen
    try:
        s, ref = SortedKeys(), []
        for k in keys:
            if k not in ref:
                s.add(k)
                ref.append(k)
                ref.sort()
        assert list(s) == ref and len(s) == len(ref)
        for end in (b, None):
            want = ref[bisect_left(ref, a):] if end is None else [k for k in ref if a <= k < end]
            assert s.irange(a, end) == want
            assert s.count_range(a, end) == len(want)
        assert list(SortedKeys(ref)) == ref
    finally:
        sortedkeys.CHUNK = old


def test_many_random_keys():
    rng = random.Random(3)
    keys = list({rng.randbytes(6) for _ in range(20_000)})
    s = SortedKeys()
    for k in keys:
        s.add(k)
    keys.sort()
    assert list(s) == keys
    assert s.irange(keys[100], keys[5000]) == keys[100:5000]
    assert s.count_range(keys[100], None) == len(keys) - 100
