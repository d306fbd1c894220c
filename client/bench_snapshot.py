"""Figures for a large store: memory, snapshot pause, restart, catch-up.

Run: `python -m client.bench_snapshot [--keys 1000000] [--json]` (or
`raftkv bench-snapshot`). On a private local Ray instance (unless Ray is
already initialized here), a fresh 3-replica cluster is filled with `keys`
100-byte values (keys `k/0000000..`, written in txns of 128 puts from 32
concurrent writers), then:

    load_s, load_keys_per_s   time to write them (every write durable on a quorum)
    rss_mb_per_replica        resident memory of each replica after the load
                              (once no replica is building a snapshot)
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
                              it has caught up (applied the leader's commit
                              index, its store at the leader's revision)
    new_member_s              a new member added (`add_replica`) once the
                              leader has snapshotted (nearly) everything: it
                              starts with an empty log and catches up through
                              InstallSnapshot; until it is caught up and
                              promoted to voter
    new_member_serving_s      from the same start, until its revision equals
                              the leader's
    new_member_installed      snapshots the new member installed
    new_member_rss_mb         resident memory of the new member then
    elections_during_run      leader elections after the first (term - 1)
    loop_stalls, loop_stall_ms_max
                              ticks that came more than half an election
                              timeout late on the replicas still running at
                              the end (their loop was held up), and the worst
The new member is removed again at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
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


def _member(cluster: Any, i: int) -> dict:
    """Replica i's entry in `cluster.status()` (looked up by index: the
    list is over the current members, so positions move with membership)."""
    for s in cluster.status():
        if s["replica"] == i:
            return s
    raise LookupError(f"replica {i} is not a member ({cluster.indices})")


def _serving(cluster: Any, i: int, commit: int = 0) -> bool:
    """Replica i's state machine has applied `commit` and is at the leader's
    revision. (Until this session the status reported the Raft core's applied
    index, which counts a snapshot applied once its last chunk is in, seconds
    before the replica has saved it and loaded its store: the revision check
    guards this figure against that.)"""
    st = {s["replica"]: s for s in cluster.status()}
    lead = next((s for s in st.values() if s["role"] == "leader"), None)
    me = st.get(i, {})
    return (lead is not None and (me.get("applied_index") or 0) >= commit
            and me.get("revision") == lead["revision"])


def _snapshot_now(cluster: Any, i: int) -> None:
    """Make replica i snapshot everything it has applied now, and wait for it."""
    target = 0

    def answered() -> bool:  # None while it is too busy to answer
        nonlocal target
        target = _member(cluster, i).get("applied_index")
        return target is not None

    _wait(answered)

    def done() -> bool:
        if (_member(cluster, i).get("snapshot_index") or 0) >= target:
            return True
        ray.get(cluster.handle(i).take_snapshot.remote())  # False while one is being written: ask again
        return False

    _wait(done, every=0.5)


def run(keys: int = 1_000_000) -> dict:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is for results
    if not ray.is_initialized():
        # address="local": a private instance even when another Ray cluster on
        # this machine was recorded as the current one (/tmp/ray/ray_current_cluster).
        ray.init(address="local", num_cpus=max(4, os.cpu_count() or 4), include_dashboard=False, log_to_driver=False,
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
            # Not while a replica builds a snapshot (its plain form is alive then).
            _wait(lambda: not any(s.get("snapshot_running") for s in cluster.status()))
            st = cluster.status()
            out["rss_mb_per_replica"] = [round(s["rss_bytes"] / 2**20) for s in st]
            growth = max(s["rss_bytes"] - empty[s["replica"]] for s in st)
            out["rss_mb_per_million_keys"] = round(growth / 2**20 / (keys / 1e6))

            # One snapshot on every replica, measured.
            for i in cluster.indices:
                _snapshot_now(cluster, i)
            st = cluster.status()
            out["snapshot_bytes"] = max(s["stats"]["snapshot_bytes"] for s in st)
            out["snapshot_pause_ms"] = max(s["stats"]["snapshot_pause_ms"] for s in st)

            leader = cluster.leader()
            follower = next(i for i in cluster.indices if i != leader)
            c.put("marker", "1")
            cluster.kill_replica(follower)
            t0 = time.monotonic()
            cluster.restart_replica(follower, timeout=600)
            commit = _member(cluster, leader)["commit_index"]
            _wait(lambda: (_member(cluster, follower).get("applied_index") or 0) >= commit)
            out["restart_s"] = round(time.monotonic() - t0, 1)

            leader = cluster.leader()  # may have moved meanwhile
            follower = next(i for i in cluster.indices if i != leader)
            last_before = _member(cluster, follower)["last_index"]
            cluster.kill_replica(follower)
            for i in range(50):
                c.put(f"after/{i}", "x")
            _snapshot_now(cluster, leader)
            out["leader_snapshot_index"] = _member(cluster, leader)["snapshot_index"]
            out["follower_last_index"] = last_before
            # The follower's log now ends before the leader's snapshot: it can
            # only catch up by installing the whole store, as a new member would.
            t0 = time.monotonic()
            cluster.restart_replica(follower, timeout=600)
            commit = _member(cluster, leader)["commit_index"]
            _wait(lambda: _serving(cluster, follower, commit))
            out["catch_up_s"] = round(time.monotonic() - t0, 1)
            out["installed"] = _member(cluster, follower)["stats"]["snapshots_installed"]

            # A new member: an empty log, so only InstallSnapshot of the whole
            # store brings it up to date. The leader snapshots everything first,
            # so the figure is the transfer and install, not the leader's encoding.
            leader = cluster.leader()
            _snapshot_now(cluster, leader)
            t0 = time.monotonic()
            new = cluster.add_replica(timeout=600)
            out["new_member_s"] = round(time.monotonic() - t0, 1)
            _wait(lambda: _serving(cluster, new))
            out["new_member_serving_s"] = round(time.monotonic() - t0, 1)
            joined = _member(cluster, new)
            out["new_member_installed"] = joined["stats"]["snapshots_installed"]
            out["new_member_rss_mb"] = round(joined["rss_bytes"] / 2**20)
            st = cluster.status()
            out["elections_during_run"] = max(s["term"] or 0 for s in st) - 1
            # Ticks that came more than half an election timeout late (the
            # loop was held up), and the worst, over the replicas still running.
            stats = [s["stats"] for s in st if s.get("stats")]
            out["loop_stalls"] = sum(x["stalls"] for x in stats)
            out["loop_stall_ms_max"] = max((x["stall_ms_max"] for x in stats), default=0.0)
            cluster.remove_replica(new)  # leave the cluster as it was
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
