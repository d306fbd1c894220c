"""Thousands of seeded random runs of the simulator, invariants checked throughout.

`RAFTKV_SIM_SEEDS=N` sets how many seeds run (default 2000, the CI figure);
`RAFTKV_SIM_SEED=S` runs exactly seed S. A failure names its seed and the
one-line command that replays it. About 30% of the seeds also change
membership all along (`tests.simulator.CHURN_SEEDS`). After the seeds, the
last tests check that they went down the snapshot paths that matter (lost
chunks, a transfer cut short by a new leader or by a crash, a tail kept by an
install, a disagreeing log replaced by one, appends after one) and the
membership ones (learners added, caught up by snapshot, promoted; members and
leaders removed; changes refused; an uncommitted change truncated; a
replica still voting for the candidate that promoted it; a leader elected
while being removed).
"""

from __future__ import annotations

import collections
import os

import pytest

from tests.simulator import random_run

pytestmark = pytest.mark.sim

SEEDS = int(os.environ.get("RAFTKV_SIM_SEEDS", "2000"))
ONE = os.environ.get("RAFTKV_SIM_SEED")
CHUNK = 100
# How many seeds took each path, summed over the chunks run in this session.
_COVERAGE: collections.Counter[str] = collections.Counter()


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
        # (a single-voter start may deliver nothing: it commits alone)
        assert sim.committed and (sim.stats["delivered"] > 0 or sim.n == 1), f"seed {seed} did no work"
        _COVERAGE.update(k for k, v in sim.stats.items() if v)
        _COVERAGE["seeds"] += 1
        ran += 1
    assert ran == len(_seeds(chunk))


def test_random_seeds_exercise_the_snapshot_paths():
    if _COVERAGE["seeds"] < 500:
        pytest.skip("needs the random seeds above to run first, at least 500 of them")
    paths = ("compactions", "snap_installs", "snap_chunks_lost", "snap_nacks", "snap_kept_tail",
             "snap_appends_after", "snap_cut_by_new_term", "snap_cut_by_crash", "snap_restarts_loaded",
             "snap_replaced_log")
    missing = [p for p in paths if _COVERAGE[p] == 0]
    assert not missing, f"no seed took these snapshot paths: {missing} ({dict(_COVERAGE)})"


def test_random_seeds_exercise_the_membership_paths():
    if _COVERAGE["seeds"] < 500:
        pytest.skip("needs the random seeds above to run first, at least 500 of them")
    paths = ("learners_added", "learner_snap_installs", "promotions", "removals", "leader_removals", "retired",
             "conf_refused", "conf_reverted", "learner_votes", "leader_being_removed")
    missing = [p for p in paths if _COVERAGE[p] == 0]
    assert not missing, f"no seed took these membership paths: {missing} ({dict(_COVERAGE)})"
