"""End-to-end figures of a 3-replica cluster on Ray, measured in one run.

Run: `python -m client.bench [--json] [--seconds N] [--writers 64] [--readers 64]`
(or `raftkv bench`). It starts a private local Ray instance unless Ray is
already initialized in this process, a fresh 3-replica cluster in a temporary
directory, measures, and stops the cluster.

Figures:
    ray_rtt_ms            median no-op actor call (`ping`) to the leader.
    put_p50_ms, p99       sequential puts of 100-byte values from one client.
    writes_per_s          durable puts/s, `writers` asyncio tasks in one process.
    writes_per_s_ray_tasks  the same load from 4 Ray tasks, each its own client.
    lin_reads_per_s       linearizable gets/s, `readers` asyncio tasks.
    ser_reads_per_s       serializable gets/s, `readers` asyncio tasks.
and the design goals (>= 10,000 writes/s, put p50 <= 3x the Ray round trip,
>= 20,000 linearizable reads/s) with whether each was met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Awaitable, Callable

import ray
import structlog

from client.client import Client, connect

log = structlog.get_logger(__name__)

VALUE = b"x" * 100
READ_KEYS = 1_000
RAY_TASKS = 4

GOAL_WRITES_PER_S = 10_000
GOAL_P50_OVER_RTT = 3.0
GOAL_LIN_READS_PER_S = 20_000


# -- single figures (each usable on its own, e.g. from tests) -----------------
def measure_rtt(handle: Any, calls: int = 200, warmup: int = 20) -> float:
    """Median round trip, in ms, of a no-op actor call (`handle.ping`)."""
    for _ in range(warmup):
        ray.get(handle.ping.remote())
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        ray.get(handle.ping.remote())
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def measure_put_latency(client: Client, puts: int = 500, warmup: int = 20) -> dict:
    """p50 and p99, in ms, of sequential puts of 100-byte values from one client."""
    for i in range(warmup):
        client.put(f"bench/lat/warm/{i}", VALUE)
    samples = []
    for i in range(puts):
        t0 = time.perf_counter()
        client.put(f"bench/lat/{i}", VALUE)
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {"put_p50_ms": _pct(samples, 50), "put_p99_ms": _pct(samples, 99), "puts": puts}


async def _load(op: Callable[[int, int], Awaitable[Any]], workers: int, seconds: float) -> tuple[int, float]:
    """Run `workers` tasks calling `op(worker, i)` in a loop for `seconds`; (ops done, elapsed)."""
    stop_at = time.perf_counter() + seconds
    counts = [0] * workers

    async def worker(w: int) -> None:
        i = 0
        while time.perf_counter() < stop_at:
            await op(w, i)
            i += 1
        counts[w] = i

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    return sum(counts), time.perf_counter() - t0


def measure_writes(client: Client, writers: int, seconds: float, tag: str = "w") -> float:
    """Durable puts per second from `writers` concurrent asyncio tasks (distinct keys)."""
    n, dt = asyncio.run(_load(lambda w, i: client.aput(f"bench/{tag}/{w}/{i}", VALUE), writers, seconds))
    return n / dt


def measure_reads(client: Client, readers: int, seconds: float, serializable: bool) -> float:
    """Gets per second from `readers` concurrent asyncio tasks over READ_KEYS existing keys."""
    def op(w: int, i: int) -> Awaitable[Any]:
        return client.aget(f"bench/read/{(w * 7919 + i) % READ_KEYS}", serializable=serializable)

    n, dt = asyncio.run(_load(op, readers, seconds))
    return n / dt


@ray.remote(num_cpus=0)
class _Barrier:
    """Holds every Ray task back until all have connected, so their runs overlap."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.arrived = 0
        self.event = asyncio.Event()

    async def arrive(self) -> None:
        self.arrived += 1
        if self.arrived >= self.parties:
            self.event.set()
        await self.event.wait()


@ray.remote(num_cpus=0, max_retries=0)
def _write_task(name: str, namespace: str, task: int, writers: int, seconds: float, barrier: Any) -> float:
    client = connect(name, namespace=namespace)
    try:
        client.put(f"bench/t{task}/warm", VALUE)
        ray.get(barrier.arrive.remote())
        return measure_writes(client, writers, seconds, tag=f"t{task}")
    finally:
        client.close()


def measure_writes_ray_tasks(name: str, namespace: str, tasks: int, writers: int, seconds: float) -> float:
    """Sum of the write rates of `tasks` Ray tasks with `writers` asyncio writers each, run together."""
    barrier = _Barrier.remote(tasks)
    try:
        rates = ray.get([_write_task.remote(name, namespace, t, writers, seconds, barrier) for t in range(tasks)],
                        timeout=seconds + 120)
    finally:
        ray.kill(barrier)
    return sum(rates)


# -- the whole run ---------------------------------------------------------------
def run_bench(seconds: float = 5.0, writers: int = 64, readers: int = 64) -> dict:
    """Start a fresh 3-replica cluster, measure every figure, stop it.

    Args:
        seconds: duration of each throughput phase (four of them).
        writers: concurrent asyncio writers (split across the Ray tasks in that phase).
        readers: concurrent asyncio readers.
    Returns:
        A flat dict of figures, ratios and goals (see the module docstring).
    """
    from raft_actors import start_cluster

    started_ray = False
    if not ray.is_initialized():
        # A private instance: never attach to (and load) someone else's Ray cluster.
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 namespace="raftkv")
        started_ray = True
    name = f"bench-{os.getpid()}-{int(time.time())}"
    namespace = "raftkv"
    out: dict[str, Any] = {"replicas": 3, "seconds": seconds, "writers": writers, "readers": readers,
                           "value_bytes": len(VALUE), "cpus": os.cpu_count()}
    cluster = client = None
    t_all = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="raftkv-bench-") as data_dir:
            cluster = start_cluster(name, 3, data_dir=data_dir, namespace=namespace)
            client = connect(name, namespace=namespace)
            out["ray_rtt_ms"] = round(measure_rtt(cluster.handle(cluster.leader())), 3)
            out.update({k: round(v, 3) if isinstance(v, float) else v
                        for k, v in measure_put_latency(client).items()})
            out["writes_per_s"] = round(measure_writes(client, writers, seconds))
            per_task = max(1, writers // RAY_TASKS)
            out["writes_per_s_ray_tasks"] = round(measure_writes_ray_tasks(name, namespace, RAY_TASKS, per_task,
                                                                           seconds))
            out["ray_tasks"] = RAY_TASKS
            asyncio.run(_fill(client))
            out["lin_reads_per_s"] = round(measure_reads(client, readers, seconds, serializable=False))
            out["ser_reads_per_s"] = round(measure_reads(client, readers, seconds, serializable=True))
            leader = cluster.leader()
            stats = cluster.status()[leader].get("stats", {})
            if stats.get("proposals"):
                # group commit at work: log entries (each a client batch) per leader fsync
                out["leader_entries_per_fsync"] = round(stats["entries"] / max(1, stats["fsyncs"]), 2)
            client.close()
            client = None
            cluster.stop()
            cluster = None
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            try:
                cluster.stop()
            except Exception as exc:
                log.warning("bench.stop_failed", error=str(exc))
        if started_ray:
            ray.shutdown()
    out["put_p50_over_rtt"] = round(out["put_p50_ms"] / out["ray_rtt_ms"], 2) if out["ray_rtt_ms"] else None
    out["goals"] = {
        "writes_per_s>=10000": out["writes_per_s"] >= GOAL_WRITES_PER_S,
        "put_p50<=3x_rtt": out["put_p50_over_rtt"] is not None and out["put_p50_over_rtt"] <= GOAL_P50_OVER_RTT,
        "lin_reads_per_s>=20000": out["lin_reads_per_s"] >= GOAL_LIN_READS_PER_S,
    }
    out["wall_s"] = round(time.perf_counter() - t_all, 1)
    return out


async def _fill(client: Client) -> None:
    await asyncio.gather(*(client.aput(f"bench/read/{i}", VALUE) for i in range(READ_KEYS)))


def _pct(sorted_samples: list[float], p: float) -> float:
    if not sorted_samples:
        return float("nan")
    k = min(len(sorted_samples) - 1, max(0, round(p / 100 * len(sorted_samples)) - 1))
    return sorted_samples[k]


# -- command line ------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench options, shared with `raftkv bench`."""
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput phase (default 5)")
    parser.add_argument("--writers", type=int, default=64, help="concurrent writers (default 64)")
    parser.add_argument("--readers", type=int, default=64, help="concurrent readers (default 64)")


def run_from_args(args: argparse.Namespace) -> dict:
    if args.seconds <= 0 or args.writers < 1 or args.readers < 1:
        raise SystemExit("bench: --seconds must be > 0, --writers and --readers >= 1")
    if not structlog.is_configured():
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                            logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is for results
    result = run_bench(args.seconds, args.writers, args.readers)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
    return result


def format_table(r: dict) -> str:
    rows = [
        ("Ray actor call round trip (median)", f"{r['ray_rtt_ms']:.2f} ms"),
        ("put latency p50 / p99 (sequential)", f"{r['put_p50_ms']:.2f} / {r['put_p99_ms']:.2f} ms"),
        ("put p50 / Ray round trip", f"{r['put_p50_over_rtt']}x"),
        (f"writes/s, {r['writers']} asyncio writers", f"{r['writes_per_s']:,}"),
        (f"writes/s, {r['ray_tasks']} Ray tasks", f"{r['writes_per_s_ray_tasks']:,}"),
        (f"linearizable reads/s, {r['readers']} readers", f"{r['lin_reads_per_s']:,}"),
        (f"serializable reads/s, {r['readers']} readers", f"{r['ser_reads_per_s']:,}"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v:>16}" for k, v in rows]
    lines.append("goals: " + ", ".join(f"{g} {'met' if ok else 'NOT met'}" for g, ok in r["goals"].items()))
    lines.append(f"({r['replicas']} replicas, {r['value_bytes']}-byte values, {r['seconds']} s a phase, "
                 f"{r['cpus']} CPUs, {r['wall_s']} s in all)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raftkv bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    run_from_args(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    main()
