"""Chaos run: concurrent clients record a history while a nemesis injects faults.

Run: `python -m client.chaos --duration 60 --seed N [--json] [--history FILE]`.

Theory of operation
-------------------
`run_chaos` starts a fresh cluster in a temporary directory (and a private
local Ray instance when Ray is not initialized in this process). Then, for
`duration` seconds:

- Clients run random put, get, delete and compare-and-swap operations on a
  few keys: threads using the sync API, asyncio tasks sharing one client, and
  Ray tasks that each connect by name and return their part of the history.
  Every written value is unique (`<process>-<n>`), so a read names the write it
  saw. Each operation is recorded with its invocation and completion times
  (`time.time()`: every process runs on this machine) and its outcome: ok;
  fail when the client rejected it before sending (it certainly had no
  effect); unknown when it timed out, found no quorum or the client closed
  (it may or may not have taken effect). A short client timeout (2 s) turns
  operations caught in a fault into unknown ones instead of hanging.
- A nemesis thread, driven by `random.Random(seed)`, waits 1 to 3 s, injects a
  fault, holds it 1 to 3 s and heals it: kill a replica (then restart it from
  its data directory), kill the leader, partition a minority from the majority,
  partition the leader alone, pause a replica's process (SIGSTOP, then
  SIGCONT), cut the leader's messages to its followers one way (it still
  hears them: an asymmetric partition), replace a running replica by a new
  member (add it as a learner, promote it, remove the old one: membership
  changes through the log while the clients run), or two of these at once.

At the end everything is healed (processes continued, replicas restarted,
partitions healed), a leader is awaited, and every key is read once more;
those final reads are part of the history, so "nothing acknowledged was
lost" is part of what the linearizability checker proves. The faults are
seeded, but thread scheduling, Ray and the OS are not: a seed reproduces the
fault schedule, not the exact history (use --history to keep a failing one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any, Callable, Sequence

import ray
import structlog

from client.linearizability import LINEARIZABLE, Op, check_history
from kv.errors import InvalidRequest

log = structlog.get_logger(__name__)

NAMESPACE = "raftkv"
DEFAULT_CLIENTS = {"threads": 3, "async_tasks": 4, "ray_tasks": 2}
CLIENT_TIMEOUT = 2.0  # default: seconds a client request may take, retries included
KEYS = 5
FAULT_KINDS = ("kill", "kill-leader", "partition-minority", "partition-leader", "partition-oneway", "pause",
               "replace")


# -- one client operation ---------------------------------------------------------
class _OpGen:
    """Random operations for one process: unique values, cas mostly against the last value seen."""

    def __init__(self, process: str, seed: int, keys: Sequence[str]) -> None:
        self.process = process
        self.rng = random.Random(f"{seed}/{process}")
        self.keys = keys
        self.n = 0
        self.seen: dict[str, str] = {}

    def next(self) -> dict:
        rng = self.rng
        key = rng.choice(self.keys)
        kind = rng.choices(("get", "put", "cas", "delete"), (4, 3, 2, 1))[0]
        self.n += 1
        op = {"process": self.process, "kind": kind, "key": key}
        if kind == "put":
            op["value"] = f"{self.process}-{self.n}"
        elif kind == "cas":
            old = self.seen.get(key)
            op["old"] = old if old is not None and rng.random() < 0.8 else f"{self.process}-{rng.randrange(self.n)}"
            op["new"] = f"{self.process}-{self.n}"
        return op

    def saw(self, op: dict, result: Any) -> None:
        if op["kind"] == "get" and result is not None:
            self.seen[op["key"]] = result
        elif op["kind"] == "put":
            self.seen[op["key"]] = op["value"]
        elif op["kind"] == "cas" and result:
            self.seen[op["key"]] = op["new"]


def _text(v: Any) -> Any:
    return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else v


def _call(client: Any, op: dict) -> Any:
    kind, key = op["kind"], op["key"]
    if kind == "put":
        client.put(key, op["value"])
        return None
    if kind == "get":
        kv = client.get(key)
        return None if kv is None else _text(kv.value)
    if kind == "delete":
        return client.delete(key)
    return client.replace(key, op["old"], op["new"])


async def _acall(client: Any, op: dict) -> Any:
    kind, key = op["kind"], op["key"]
    if kind == "put":
        await client.aput(key, op["value"])
        return None
    if kind == "get":
        kv = await client.aget(key)
        return None if kv is None else _text(kv.value)
    if kind == "delete":
        return await client.adelete(key)
    return await client.areplace(key, op["old"], op["new"])


def _outcome(exc: BaseException) -> str:
    # Only a request the client rejected before sending is certainly not applied;
    # Unavailable, timeouts, ClientClosed and anything unexpected may have been.
    return "fail" if isinstance(exc, InvalidRequest) else "unknown"


def _record(op: dict, invoke: float, result: Any = None, exc: BaseException | None = None) -> dict:
    op = dict(op, invoke=invoke)
    if exc is None:
        op.update(complete=time.time(), outcome="ok", result=result)
    else:
        outcome = _outcome(exc)
        op.update(complete=time.time() if outcome == "fail" else None, outcome=outcome, error=type(exc).__name__)
    return op


def _sync_worker(client: Any, process: str, seed: int, keys: Sequence[str], stop_at: float,
                 think: float) -> list[dict]:
    """Run random ops one at a time until `stop_at`; the recorded ops."""
    gen = _OpGen(process, seed, keys)
    out = []
    while time.time() < stop_at:
        op = gen.next()
        t0 = time.time()
        try:
            result = _call(client, op)
        except Exception as exc:
            out.append(_record(op, t0, exc=exc))
        else:
            out.append(_record(op, t0, result))
            gen.saw(op, result)
        if think:
            time.sleep(gen.rng.uniform(0, think))
    return out


async def _async_worker(client: Any, process: str, seed: int, keys: Sequence[str], stop_at: float,
                        think: float, timeout: float) -> list[dict]:
    gen = _OpGen(process, seed, keys)
    out = []
    while time.time() < stop_at:
        op = gen.next()
        t0 = time.time()
        try:
            # The client's own timeout bounds the call; this only guards against a hang.
            result = await asyncio.wait_for(_acall(client, op), timeout * 3)
        except Exception as exc:
            out.append(_record(op, t0, exc=exc))
        else:
            out.append(_record(op, t0, result))
            gen.saw(op, result)
        if think:
            await asyncio.sleep(gen.rng.uniform(0, think))
    return out


@ray.remote(num_cpus=0, max_retries=0)
def _ray_worker(name: str, namespace: str, process: str, seed: int, keys: list[str], stop_at: float,
                think: float, timeout: float) -> list[dict]:
    """A Ray task: its own client, its own part of the history."""
    from client.client import connect

    client = connect(name, namespace=namespace, timeout=timeout)
    try:
        return _sync_worker(client, process, seed, keys, stop_at, think)
    finally:
        client.close()


# -- the nemesis ------------------------------------------------------------------------
class Nemesis:
    """Injects seeded faults into a `Cluster` and always undoes them.

    Args:
        cluster: the `raft_actors.cluster.Cluster` to fault.
        rng: the schedule's random source.
    """

    def __init__(self, cluster: Any, rng: random.Random, kinds: Sequence[str] = FAULT_KINDS) -> None:
        unknown = sorted(set(kinds) - set(FAULT_KINDS))
        if unknown or not kinds:
            raise InvalidRequest(f"unknown fault kinds {unknown}; choose from {', '.join(FAULT_KINDS)}")
        self.cluster = cluster
        self.rng = rng
        self.kinds = tuple(kinds)
        self.events: list[dict] = []  # one per fault: kind, targets, start, end
        self._killed: set[int] = set()
        self._paused: dict[int, int] = {}  # replica -> pid
        self._partitioned = False
        self._pids: dict[int, int] = {}
        self._size = len(cluster.voters)  # voters to keep through replacements
        self._stop = threading.Event()

    # -- schedule -------------------------------------------------------------
    def run(self, stop_at: float) -> None:
        """Inject faults until `stop_at` (then heal everything)."""
        try:
            while not self._stop.is_set():
                gap, hold = self.rng.uniform(1.0, 3.0), self.rng.uniform(1.0, 3.0)
                if time.time() + gap + hold > stop_at:
                    break
                if self._stop.wait(gap):
                    break
                kinds = [self.rng.choice(self.kinds)]
                if self.rng.random() < 0.25:  # sometimes two at once
                    kinds.append(self.rng.choice(self.kinds))
                start = time.time()
                applied = self._inject(kinds)
                self._stop.wait(hold)
                self.heal()
                for a in applied:
                    self.events.append(dict(a, start=start, end=time.time()))
        except Exception as exc:  # a nemesis failure must not leave faults behind
            log.error("nemesis.failed", error=repr(exc))
            raise
        finally:
            self.heal()

    def stop(self) -> None:
        self._stop.set()

    def _inject(self, kinds: list[str]) -> list[dict]:
        # Partitions first: a paused replica could not take its new fault settings.
        kinds = sorted(kinds, key=lambda k: not k.startswith("partition"))
        applied = []
        for kind in kinds:
            try:
                targets = getattr(self, "_" + kind.replace("-", "_"))()
            except Exception as exc:
                log.warning("nemesis.inject_failed", fault=kind, error=repr(exc))
                continue
            if targets is not None:
                applied.append({"kind": kind, "targets": targets})
                log.info("nemesis.fault", fault=kind, targets=targets)
        return applied

    def _up(self) -> list[int]:
        return [i for i in self.cluster.indices if i not in self._killed and i not in self._paused]

    def _leader(self) -> int | None:
        for s in self.cluster.status(timeout=1.0):
            if s["role"] == "leader" and s["replica"] in self._up():
                return s["replica"]
        return None

    def _kill(self, index: int | None = None) -> list[int] | None:
        up = self._up()
        if index is None:
            if not up:
                return None
            index = self.rng.choice(up)
        self.cluster.kill_replica(index)
        self._killed.add(index)
        self._pids.pop(index, None)
        return [index]

    def _kill_leader(self) -> list[int] | None:
        leader = self._leader()
        return self._kill(leader) if leader is not None else self._kill()

    def _partition_minority(self) -> list[int] | None:
        if self._partitioned:
            return None
        members = self.cluster.indices
        minority = self.rng.sample(members, (len(members) - 1) // 2)
        self.cluster.partition([minority, [i for i in members if i not in minority]])
        self._partitioned = True
        return sorted(minority)

    def _partition_leader(self) -> list[int] | None:
        if self._partitioned:
            return None
        leader = self._leader()
        members = self.cluster.indices
        if leader is None:
            leader = self.rng.choice(members)
        self.cluster.partition([[leader], [i for i in members if i != leader]])
        self._partitioned = True
        return [leader]

    def _partition_oneway(self) -> list[int] | None:
        if self._partitioned:
            return None
        leader = self._leader()
        if leader is None:
            leader = self.rng.choice(self.cluster.indices)
        # The leader can no longer reach its followers, but still hears them.
        for i in self.cluster.indices:
            if i != leader:
                self.cluster.block(leader, i)
        self._partitioned = True
        return [leader]

    def _replace(self) -> list[int] | None:
        """A new member in, a running one out (both through the log). The
        victim is a running replica, the leader half the time; a killed or
        paused one is left for healing. If an earlier replacement added its
        replica but could not remove the old one, this only removes."""
        up = self._up()
        if not up:
            return None
        leader = self._leader() if self.rng.random() < 0.5 else None
        victim = leader if leader is not None else self.rng.choice(up)
        new = -1
        if len(self.cluster.voters) <= self._size:
            new = self.cluster.add_replica(timeout=10.0)
        self.cluster.remove_replica(victim, timeout=10.0)
        self._pids.pop(victim, None)
        return [victim, new]

    def _pause(self) -> list[int] | None:
        up = self._up()
        if not up:
            return None
        leader = self._leader() if self.rng.random() < 0.5 else None
        index = leader if leader is not None else self.rng.choice(up)
        pid = self._pid(index)
        os.kill(pid, signal.SIGSTOP)
        self._paused[index] = pid
        return [index]

    def _pid(self, index: int) -> int:
        if index not in self._pids:
            handle = self.cluster.handle(index)
            pid = ray.get(handle.__ray_call__.remote(lambda self: __import__("os").getpid()), timeout=10)
            if pid == os.getpid():
                raise RuntimeError("replica runs in the driver process; refusing to pause it")
            self._pids[index] = pid
        return self._pids[index]

    # -- healing --------------------------------------------------------------
    def heal(self) -> None:
        """Continue paused processes, restart killed replicas, heal partitions. Idempotent."""
        for index, pid in list(self._paused.items()):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self._paused.pop(index)
        for index in sorted(self._killed):
            for attempt in range(3):
                try:
                    self.cluster.restart_replica(index)
                    break
                except Exception as exc:
                    log.warning("nemesis.restart_failed", replica=index, attempt=attempt, error=repr(exc))
                    time.sleep(1.0)
            else:
                raise RuntimeError(f"replica {index} could not be restarted from its data directory")
            self._killed.discard(index)
        if self._partitioned:
            for attempt in range(3):
                try:
                    self.cluster.heal()
                    break
                except Exception as exc:
                    log.warning("nemesis.heal_failed", attempt=attempt, error=repr(exc))
                    time.sleep(1.0)
            self._partitioned = False


# -- the run ------------------------------------------------------------------------------
def run_chaos(duration: float = 60, seed: int = 0, replicas: int = 3, clients: dict | None = None,
              think: float = 0.01, history_path: str | None = None, check_budget: float = 60.0,
              client_timeout: float = CLIENT_TIMEOUT, faults: Sequence[str] = FAULT_KINDS) -> dict:
    """Record a history under faults on a fresh cluster and check it.

    Args:
        duration: seconds of load and faults.
        seed: seeds the fault schedule and the clients' operations.
        replicas: cluster size (3 or 5).
        clients: how many of each client: {"threads", "async_tasks", "ray_tasks"}
            (missing entries take DEFAULT_CLIENTS).
        think: each client sleeps up to this long between operations.
        history_path: if given, the history is written there as JSON lines.
        client_timeout: each client's request timeout; an operation caught in a
            fault longer than this ends as unknown.
        check_budget: seconds the linearizability checker may take.
        faults: the fault kinds the nemesis draws from (default: all of FAULT_KINDS).
    Returns:
        A summary dict: ops_ok, ops_failed, ops_unknown, faults (count),
        faults_by_kind, throughput figures, linearizable (bool), the checker's
        verdict and, on failure, the window of ops it could not linearize.
    Raises:
        RaftKVError: the cluster could not be started or did not recover.
    """
    from client.client import connect
    from raft_actors.cluster import start_cluster
    from raft_actors.node import NodeOptions

    counts = dict(DEFAULT_CLIENTS, **(clients or {}))
    started_ray = False
    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 namespace=NAMESPACE)
        started_ray = True
    t_all = time.time()
    name = f"chaos-{os.getpid()}-{seed}-{int(t_all)}"
    keys = [f"chaos/{k}" for k in range(KEYS)]
    data_dir = tempfile.mkdtemp(prefix="raftkv-chaos-")
    cluster = nemesis = None
    local_clients: list[Any] = []
    history: list[dict] = []
    try:
        cluster = start_cluster(name, replicas, data_dir=data_dir, namespace=NAMESPACE,
                                options=NodeOptions(request_timeout_s=client_timeout / 2))
        nemesis = Nemesis(cluster, random.Random(seed), faults)
        for i in range(replicas):  # learn the pids while every replica answers
            nemesis._pid(i)
        start = time.time() + 2.0  # let the Ray tasks' workers start and connect
        stop_at = start + duration
        refs = [_ray_worker.remote(name, NAMESPACE, f"r{i}", seed, keys, stop_at, think, client_timeout)
                for i in range(counts["ray_tasks"])]
        results: dict[str, list[dict]] = {}
        threads = []

        def spawn(label: str, fn: Callable[[], list[dict]]) -> None:
            def body() -> None:
                try:
                    results[label] = fn()
                except Exception as exc:
                    log.error("chaos.worker_failed", worker=label, error=repr(exc))
                    results[label] = []
            t = threading.Thread(target=body, name=f"chaos-{label}", daemon=True)
            threads.append(t)
            t.start()

        for i in range(counts["threads"]):
            c = connect(name, namespace=NAMESPACE, timeout=client_timeout)
            local_clients.append(c)
            spawn(f"t{i}", lambda c=c, i=i: _sync_worker(c, f"t{i}", seed, keys, stop_at, think))
        if counts["async_tasks"]:
            ac = connect(name, namespace=NAMESPACE, timeout=client_timeout)
            local_clients.append(ac)

            async def many() -> list[dict]:
                parts = await asyncio.gather(*(_async_worker(ac, f"a{i}", seed, keys, stop_at, think, client_timeout)
                                               for i in range(counts["async_tasks"])))
                return [op for part in parts for op in part]

            spawn("async", lambda: asyncio.run(many()))
        time.sleep(max(0.0, start - time.time()))
        nemesis_thread = threading.Thread(target=nemesis.run, args=(stop_at,), name="chaos-nemesis", daemon=True)
        nemesis_thread.start()
        nemesis_thread.join(duration + 120)
        for t in threads:
            t.join(client_timeout * 4 + max(0.0, stop_at - time.time()))
        for part in results.values():
            history.extend(part)
        try:
            for part in ray.get(refs, timeout=max(0.0, stop_at - time.time()) + 60):
                history.extend(part)
        except Exception as exc:
            # A lost Ray task's ops are missing from the history: their effects would
            # look like phantom writes, so the verdict could not be trusted.
            raise RuntimeError(f"a Ray client task failed; the history is incomplete: {exc!r}") from exc
        for c in local_clients:
            c.close()
        local_clients = []
        nemesis.heal()
        cluster.leader(timeout=30.0)
        history.extend(_final_reads(name, keys))
    finally:
        for c in local_clients:
            c.close()
        if nemesis is not None:
            nemesis.stop()
            try:
                nemesis.heal()
            except Exception as exc:
                log.error("chaos.heal_failed", error=repr(exc))
        if cluster is not None:
            try:
                cluster.stop()
            except Exception as exc:
                log.warning("chaos.stop_failed", error=repr(exc))
        shutil.rmtree(data_dir, ignore_errors=True)
        if started_ray:
            ray.shutdown()

    for i, op in enumerate(sorted(history, key=lambda o: o["invoke"])):
        op["id"] = i
    if history_path:
        with open(history_path, "w") as f:
            for op in history:
                f.write(json.dumps(op) + "\n")
    result = check_history([Op.from_dict(op) for op in history], time_budget=check_budget)
    summary = _summarize(history, nemesis.events if nemesis else [], result, duration, seed, replicas, counts)
    summary["wall_s"] = round(time.time() - t_all, 1)
    log.info("chaos.done", **{k: summary[k] for k in ("ops_ok", "ops_failed", "ops_unknown", "faults",
                                                       "linearizable")})
    return summary


def _final_reads(name: str, keys: Sequence[str], attempts: int = 10) -> list[dict]:
    """Read every key once after healing, retrying until it answers; the ok reads."""
    from client.client import connect

    out = []
    client = connect(name, namespace=NAMESPACE, timeout=10.0)
    try:
        for key in keys:
            for _ in range(attempts):
                op = {"process": "final", "kind": "get", "key": key}
                t0 = time.time()
                try:
                    result = _call(client, op)
                except Exception as exc:
                    log.warning("chaos.final_read_retry", key=key, error=repr(exc))
                    continue
                out.append(_record(op, t0, result))
                break
    finally:
        client.close()
    return out


def _summarize(history: list[dict], events: list[dict], result: Any, duration: float, seed: int, replicas: int,
               counts: dict) -> dict:
    outcomes = Counter(op["outcome"] for op in history)
    t_first = min((op["invoke"] for op in history), default=0.0)
    final = {op["key"]: op["result"] for op in history if op["process"] == "final"}
    faulted = _merge([(e["start"], e["end"]) for e in events])
    faulted_s = sum(b - a for a, b in faulted)
    ok_times = sorted(op["complete"] for op in history if op["outcome"] == "ok" and op["process"] != "final")
    ok_in_fault = sum(1 for t in ok_times if any(a <= t <= b for a, b in faulted))
    span = (ok_times[-1] - ok_times[0]) if len(ok_times) > 1 else 0.0
    if span:  # faults can start before the first ok and end after the last one
        lo, hi = ok_times[0], ok_times[-1]
        healthy_s = span - sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in faulted)
    else:
        healthy_s = 0.0
    linearizable = result.verdict == LINEARIZABLE
    final_reads_ok = len(final) == KEYS
    return {
        "seed": seed,
        "duration": duration,
        "replicas": replicas,
        "clients": counts,
        "ops": len(history),
        "ops_ok": outcomes["ok"],
        "ops_failed": outcomes["fail"],
        "ops_unknown": outcomes["unknown"],
        "ops_by_kind": dict(Counter(op["kind"] for op in history)),
        "faults": len(events),
        "faults_by_kind": dict(Counter(e["kind"] for e in events)),
        "faulted_s": round(faulted_s, 1),
        "fault_log": [{"kind": e["kind"], "replicas": e["targets"], "at_s": round(e["start"] - t_first, 1),
                       "for_s": round(e["end"] - e["start"], 1)} for e in events],
        "ok_per_s_faulted": round(ok_in_fault / faulted_s, 1) if faulted_s else None,
        "ok_per_s_healthy": round((len(ok_times) - ok_in_fault) / healthy_s, 1) if healthy_s >= 0.5 else None,
        "linearizable": linearizable,
        "linearizability": result.verdict,
        "key_verdicts": {str(k): v.verdict for k, v in result.keys.items()},
        "checker_s": round(result.seconds, 2),
        "final_reads": final_reads_ok,
        "final_values": final,
        "window": "\n".join(v.window for v in result.failures() if v.window) or None,
        "ok": linearizable and final_reads_ok,
    }


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


# -- command line -------------------------------------------------------------------
def format_summary(s: dict) -> str:
    """The human-readable summary printed by `raftkv chaos`."""
    faults = ", ".join(f"{k} {v}" for k, v in sorted(s["faults_by_kind"].items())) or "none"
    lines = [
        f"chaos run: seed {s['seed']}, {s['duration']} s, {s['replicas']} replicas, clients {s['clients']}",
        f"operations: {s['ops']} ({s['ops_ok']} ok, {s['ops_failed']} failed, {s['ops_unknown']} unknown)",
        f"faults injected: {s['faults']} ({faults}); {s['faulted_s']} s faulted",
        f"ok ops/s while faulted: {s['ok_per_s_faulted']}; while healthy: {s['ok_per_s_healthy']}",
        f"checker linearizability: {s['linearizability']} ({s['checker_s']} s; "
        + ", ".join(f"{k}: {v}" for k, v in s["key_verdicts"].items()) + ")",
        f"checker final reads: {'every key read after healing' if s['final_reads'] else 'FAILED: some keys unread'}",
    ]
    if s["window"]:
        lines.append(s["window"])
    lines.append(f"verdict: {'PASS' if s['ok'] else 'FAIL'} ({s['wall_s']} s)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`raftkv chaos`: returns 0 when every checker passed, 1 otherwise."""
    p = argparse.ArgumentParser(prog="raftkv chaos", description="Faults, a recorded history and a "
                                "linearizability check against a fresh local cluster.")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load and faults (default 60)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault schedule and the operations")
    p.add_argument("--replicas", type=int, default=3, help="cluster size (default 3)")
    p.add_argument("--threads", type=int, default=DEFAULT_CLIENTS["threads"], help="sync client threads")
    p.add_argument("--async-tasks", type=int, default=DEFAULT_CLIENTS["async_tasks"], help="asyncio client tasks")
    p.add_argument("--ray-tasks", type=int, default=DEFAULT_CLIENTS["ray_tasks"], help="Ray task clients")
    p.add_argument("--client-timeout", type=float, default=CLIENT_TIMEOUT,
                   help=f"client request timeout in seconds (default {CLIENT_TIMEOUT})")
    p.add_argument("--history", default=None, metavar="FILE", help="write the history there (JSON lines)")
    p.add_argument("--faults", default=",".join(FAULT_KINDS), metavar="KINDS",
                   help="comma-separated fault kinds to draw from (default: all: " + ",".join(FAULT_KINDS) + ")")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    faults = [k.strip() for k in args.faults.split(",") if k.strip()]
    if not faults or set(faults) - set(FAULT_KINDS):
        p.error(f"--faults: choose from {','.join(FAULT_KINDS)}")
    if args.duration <= 0:
        p.error("--duration must be > 0")
    if not structlog.is_configured():
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                            logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is for results
    summary = run_chaos(args.duration, args.seed, args.replicas,
                        {"threads": args.threads, "async_tasks": args.async_tasks, "ray_tasks": args.ray_tasks},
                        history_path=args.history, client_timeout=args.client_timeout, faults=faults)
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_summary(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
