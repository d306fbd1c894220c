"""Figures for the Raft core and the durable log, without Ray.

Run: `python -m client.bench_core` (prints one JSON object).

* core_entries_per_s: entries committed per second through a 3-replica
  cluster of cores in one process, no disk, in batches of 100 entries of
  100 bytes, messages delivered at once.
* sim_seeds_per_s: randomized simulator runs per second (tests/simulator.py).
* the WAL figures from `client.bench_wal` (group commit, fsync on).
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import tempfile
import time
from collections import deque

import structlog

from raft_actors.core import Config, RaftCore, Role
from raft_actors.types import PersistedState


def bench_core(total: int = 200_000, batch: int = 100, size: int = 100, replicas: int = 3) -> dict:
    peers = tuple(range(1, replicas + 1))
    cores = {i: RaftCore(Config(id=i, peers=peers), PersistedState(), random.Random(i)) for i in peers}
    inbox: deque = deque()

    def pump() -> None:
        busy = True
        while busy:
            busy = False
            for core in cores.values():
                if core.has_ready():
                    busy = True
                    rd = core.ready()
                    inbox.extend(rd.messages)
                    core.advance(rd)
            while inbox:
                m = inbox.popleft()
                cores[m.dst].step(m)
                busy = True

    cores[1].campaign()
    pump()
    leader = cores[1]
    assert leader.role == Role.LEADER
    payload = [os.urandom(size) for _ in range(batch)]
    start_commit = leader.log.committed
    t0 = time.perf_counter()
    for _ in range(total // batch):
        leader.propose(payload)
        pump()
    elapsed = time.perf_counter() - t0
    committed = min(c.log.applied for c in cores.values()) - start_commit
    return {"core_entries_per_s": round(committed / elapsed), "core_batch": batch, "core_entry_bytes": size}


def bench_sim(seconds: float = 5.0) -> dict:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.simulator import random_run  # the simulator lives with the tests

    t0 = time.perf_counter()
    seeds = 0
    while time.perf_counter() - t0 < seconds:
        random_run(seeds)
        seeds += 1
    return {"sim_seeds_per_s": round(seeds / (time.perf_counter() - t0), 1)}


def main() -> None:
    # The simulator's faults make replicas log warnings by design; keep the output to the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is for results
    out = bench_core()
    out.update(bench_sim())
    try:
        from client.bench_wal import bench_wal
    except ImportError:  # pragma: no cover - the WAL benchmark ships with the WAL
        bench_wal = None
    if bench_wal is not None:
        with tempfile.TemporaryDirectory() as d:
            out.update({f"wal_{k}" if not k.startswith("wal") else k: v for k, v in bench_wal(d).items()})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
