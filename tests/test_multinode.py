"""Replica placement across Ray nodes, in a subprocess with its own Ray cluster."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.ray
def test_replicas_spread_over_ray_nodes_stay_with_their_data_and_heal():
    proc = subprocess.run([sys.executable, "-m", "tests.multinode_check"], capture_output=True, text=True,
                          timeout=420)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    assert out.count("ok   ") == 8, out
