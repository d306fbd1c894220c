"""Figures for a large store: memory, snapshot pause, restart, catch-up.

Run: `python -m client.bench_snapshot [--keys 1000000] [--json]` (or
`raftkv bench-snapshot`). On a private local Ray instance (unless Ray is
already initialized here), a fresh 3-replica cluster is filled with `keys`
100-byte values (keys `k/0000000..`, written in txns of 128 puts from 32
concurrent writers), then:

    load_s, load_keys_per_s   time to write them (every write durable on a quorum)
    rss_mb_per_replica        resident memory of each replica after the load
    rss_mb_per_million_keys   the largest replica's growth over its empty size, per 1M keys
    snapshot_bytes            size of a replica's snapshot of the whole store
    snapshot_pause_ms         the replica's loop pause to copy its state (encoding
                              and writing run off the loop)
    restart_s                 a follower killed and restarted: until it serves
                              again at the leader's commit index (snapshot + tail)
    catch_up_s                a follower killed, the leader writes on and
                              snapshots, the follower restarted: its log ends
                              before the leader's snapshot, so it must install
                              the whole store (as a new member would); until
                              it has caught up
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import time
from typing import Any

import ray
import structlog

from client.client import connect
from kv import Put
from raft_actors import NodeOptions, start_cluster

BATCH = 128
WRITERS = 32


def _wait(pred, timeout: float = 600.0, every: float = 0.2) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(every)
    raise TimeoutError("condition not reached")


def _snapshot_now(cluster: Any, i: int) -> None:
    """Make replica i snapshot everything it has applied now, and wait for it."""
    target = cluster.status()[i]["applied_index"]

    def done() -> bool:
        if cluster.status()[i].get("snapshot_index", 0) >= target:
            return True
        ray.get(cluster.handle(i).take_snapshot.remote())  # False while one is being written: ask again
        return False

    _wait(done, every=0.5)


def run(keys: int = 1_000_000) -> dict:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if not ray.is_initialized():
        ray.init(num_cpus=max(4, os.cpu_count() or 4), include_dashboard=False, log_to_driver=False,
                 namespace="raftkv", configure_logging=False)
    # Default snapshot thresholds (replicas snapshot during the load too); the
    # figures come from one more snapshot of the full store at the end.
    opts = NodeOptions(keep_revisions=0)
    name = f"bench-snap-{os.getpid()}"
    cluster = start_cluster(name, 3, data_dir=tempfile.mkdtemp(prefix="raftkv-bench-snap-"), options=opts)
    out: dict[str, Any] = {"keys": keys}
    try:
        with connect(name, timeout=120) as c:
            empty = {s["replica"]: s["rss_bytes"] for s in cluster.status()}
            value = b"v" * 100
            start = time.monotonic()

            async def writer(w: int) -> None:
                for first in range(w * BATCH, keys, WRITERS * BATCH):
                    ops = [Put(f"k/{i:07d}", value) for i in range(first, min(first + BATCH, keys))]
                    await c.atxn(success=ops)

            async def load() -> None:
                await asyncio.gather(*(writer(w) for w in range(WRITERS)))

            asyncio.run(load())
            out["load_s"] = round(time.monotonic() - start, 1)
            out["load_keys_per_s"] = round(keys / out["load_s"])
            st = cluster.status()
            out["rss_mb_per_replica"] = [round(s["rss_bytes"] / 2**20) for s in st]
            growth = max(s["rss_bytes"] - empty[s["replica"]] for s in st)
            out["rss_mb_per_million_keys"] = round(growth / 2**20 / (keys / 1e6))

            # One snapshot on every replica, measured.
            for i in range(3):
                _snapshot_now(cluster, i)
            st = cluster.status()
            out["snapshot_bytes"] = max(s["stats"]["snapshot_bytes"] for s in st)
            out["snapshot_pause_ms"] = max(s["stats"]["snapshot_pause_ms"] for s in st)

            leader = cluster.leader()
            follower = next(i for i in range(3) if i != leader)
            c.put("marker", "1")
            cluster.kill_replica(follower)
            t0 = time.monotonic()
            cluster.restart_replica(follower, timeout=600)
            commit = cluster.status()[leader]["commit_index"]
            _wait(lambda: (cluster.status()[follower].get("applied_index") or 0) >= commit)
            out["restart_s"] = round(time.monotonic() - t0, 1)

            leader = cluster.leader()  # may have moved meanwhile
            follower = next(i for i in range(3) if i != leader)
            last_before = cluster.status()[follower]["last_index"]
            cluster.kill_replica(follower)
            for i in range(50):
                c.put(f"after/{i}", "x")
            _snapshot_now(cluster, leader)
            out["leader_snapshot_index"] = cluster.status()[leader]["snapshot_index"]
            out["follower_last_index"] = last_before
            # The follower's log now ends before the leader's snapshot: it can
            # only catch up by installing the whole store, as a new member would.
            t0 = time.monotonic()
            cluster.restart_replica(follower, timeout=600)
            commit = cluster.status()[leader]["commit_index"]
            _wait(lambda: (cluster.status()[follower].get("applied_index") or 0) >= commit)
            out["catch_up_s"] = round(time.monotonic() - t0, 1)
            out["installed"] = cluster.status()[follower]["stats"]["snapshots_installed"]
            out["elections_during_run"] = max(s["term"] for s in cluster.status()) - 1
    finally:
        cluster.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raftkv bench-snapshot", description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    r = run(args.keys)
    if args.json:
        print(json.dumps(r))
    else:
        for k, v in r.items():
            print(f"{k:28s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
