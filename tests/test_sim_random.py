"""Thousands of seeded random runs of the simulator, invariants checked throughout.

`RAFTKV_SIM_SEEDS=N` sets how many seeds run (default 2000, the CI figure);
`RAFTKV_SIM_SEED=S` runs exactly seed S. A failure names its seed and the
one-line command that replays it.
"""

from __future__ import annotations

import os

import pytest

from tests.simulator import random_run

pytestmark = pytest.mark.sim

SEEDS = int(os.environ.get("RAFTKV_SIM_SEEDS", "2000"))
ONE = os.environ.get("RAFTKV_SIM_SEED")
CHUNK = 100


def _seeds(chunk: int) -> range:
    if ONE is not None:
        return range(int(ONE), int(ONE) + 1) if chunk == 0 else range(0)
    return range(chunk * CHUNK, min(SEEDS, (chunk + 1) * CHUNK))


@pytest.mark.parametrize("chunk", range(max(1, -(-SEEDS // CHUNK)) if ONE is None else 1))
def test_random_seeds_keep_raft_invariants(chunk):
    ran = 0
    for seed in _seeds(chunk):
        try:
            sim = random_run(seed)
        except AssertionError as exc:
            pytest.fail(
                f"seed {seed}: {exc}\n"
                f"replay: RAFTKV_SIM_SEED={seed} python -m pytest -m sim tests/test_sim_random.py"
                f"  (or: python -m tests.simulator --seed {seed})",
                pytrace=False,
            )
        assert sim.stats["delivered"] > 0 and sim.committed, f"seed {seed} did no work"
        ran += 1
    assert ran == len(_seeds(chunk))
