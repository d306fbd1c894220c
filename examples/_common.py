"""What the examples share: a Ray instance and a fresh cluster to play with."""

from __future__ import annotations

import logging
import os
import tempfile
import uuid

import ray
import structlog

from raft_actors import start_cluster


def start_demo_cluster(prefix: str):
    """Attach to Ray (starting a private local instance if none is running in
    this process) and start a 3-replica cluster with a unique name in a
    fresh temporary directory. Returns the Cluster; stop() it when done."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if not ray.is_initialized():
        ray.init(num_cpus=max(4, os.cpu_count() or 4), include_dashboard=False, log_to_driver=False,
                 namespace="raftkv", configure_logging=False)
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    return start_cluster(name, 3, data_dir=tempfile.mkdtemp(prefix=f"raftkv-{prefix}-"))


def report(example: str, failures: list[str]) -> int:
    """Print each failed check and the verdict; the exit code (1 if any failed)."""
    for f in failures:
        print("FAILED:", f)
    print(f"{example}: OK" if not failures else f"{example}: FAILED")
    return 1 if failures else 0
