"""Shared pytest setup: quiet logs, the simulator seed options."""

from __future__ import annotations

import logging

import structlog

# Library code logs with structlog; keep test output to warnings and worse.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


# -- Ray integration fixtures -------------------------------------------------
# One Ray instance per test session (starting Ray costs seconds); each test
# module makes its own clusters under unique names and stops them.

import itertools
import os

import pytest

_names = itertools.count()


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False,
                 namespace="raftkv", configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def make_cluster(ray_session, tmp_path_factory):
    """start_cluster with a unique name and a fresh data dir; stopped after the test."""
    from raft_actors import start_cluster

    started = []

    def make(replicas: int = 3, name: str | None = None, data_dir: str | None = None, **kw):
        name = name or f"t{os.getpid()}-{next(_names)}"
        data_dir = data_dir or str(tmp_path_factory.mktemp(name))
        cluster = start_cluster(name, replicas, data_dir=data_dir, **kw)
        started.append(cluster)
        return cluster

    yield make
    for c in started:
        try:
            c.stop()
        except Exception:
            pass


@pytest.fixture
def cluster(make_cluster):
    """A fresh 3-replica cluster for one test."""
    return make_cluster(3)


@pytest.fixture
def c(cluster):
    """A client of `cluster`, closed after the test."""
    from client import connect

    client = connect(cluster.name, timeout=20)
    yield client
    client.close()
