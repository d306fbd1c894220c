"""Every example in examples/ runs and passes its own checks (on the session's Ray instance)."""

from __future__ import annotations

import importlib

import pytest

pytestmark = pytest.mark.ray


@pytest.mark.parametrize("name", ["leader_election", "distributed_lock", "config_watch"])
def test_example_runs_and_verifies(ray_session, name, capsys):
    module = importlib.import_module(f"examples.{name}")
    assert module.main() == 0, capsys.readouterr().out
    assert f"{name}: OK" in capsys.readouterr().out
