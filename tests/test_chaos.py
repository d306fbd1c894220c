"""A short chaos run on the session's Ray instance: faults, a history, a verdict."""

from __future__ import annotations

import pytest

from client.chaos import run_chaos


@pytest.mark.ray
def test_short_chaos_run_is_linearizable(ray_session):
    summary = run_chaos(duration=20, seed=1)
    assert ray_session.is_initialized()  # run_chaos used the session's Ray, did not shut it down
    assert summary["faults"] >= 2, summary
    assert summary["ops_ok"] > 100, summary
    assert summary["final_reads"], summary
    assert summary["linearizable"] is True, summary["window"]
    assert summary["ops_ok"] + summary["ops_failed"] + summary["ops_unknown"] == summary["ops"]


@pytest.mark.ray
def test_chaos_with_membership_changes_is_linearizable(ray_session):
    # Replicas replaced (new member in, running one out, the leader half the
    # time) while replicas are killed and the leader is cut off.
    summary = run_chaos(duration=20, seed=3, faults=("replace", "kill", "partition-leader"))
    assert summary["faults_by_kind"].get("replace", 0) >= 1, summary["fault_log"]
    assert summary["ops_ok"] > 100, summary
    assert summary["final_reads"], summary
    assert summary["linearizable"] is True, summary["window"]
