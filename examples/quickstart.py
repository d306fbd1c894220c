"""A tour of raftkv in under a minute: write, read, fail over, recover.

Run: `python -m examples.quickstart` (or `raftkv demo`).

It starts a private local Ray instance and a 3-replica cluster named "demo" in
a fresh temporary directory, then:

1. writes 1,000 keys from 1,000 concurrent asyncio tasks (the client batches
   them into a few actor calls), reads some back both ways, does a
   compare-and-swap, a transaction and a prefix read;
2. kills the leader replica, times how long until a write succeeds again, and
   checks every key is still there;
3. restarts the killed replica from its data directory and waits until it has
   caught up;
4. replaces a replica by a new member (added as a learner, promoted once it
   has caught up, then the old one removed), all through the Raft log;
5. stops the whole cluster, starts it again from the same directory (with the
   changed membership), and checks every key came back.

Every step is verified; the exit code is 1 if anything is wrong.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time

import ray
import structlog

from client import Put, Range, connect
from raft_actors import start_cluster

NAME = "demo"
KEYS = 1_000
PREFIX = "demo/key/"


def _key(i: int) -> str:
    return f"{PREFIX}{i:04d}"


def _value(i: int) -> str:
    return f"value-{i}"


class _Checks:
    """Collects failed verifications so the demo reports all of them, then exits 1."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
            print(f"  FAILED: {what}")
        return ok


def _say(text: str) -> None:
    print(text, flush=True)


async def _write_all(client, n: int) -> None:
    await asyncio.gather(*(client.aput(_key(i), _value(i)) for i in range(n)))


def _verify_all(client, checks: _Checks, when: str) -> int:
    """Read every demo key linearizably; returns how many have the right value."""
    kvs = client.get_prefix(PREFIX)
    found = {kv.key: kv.value for kv in kvs}
    good = sum(1 for i in range(KEYS) if found.get(_key(i)) == _value(i))
    checks.check(good == KEYS and len(found) == KEYS,
                 f"{when}: {good} of {KEYS} keys correct, {len(found)} keys found")
    return good


def _wait_caught_up(cluster, index: int, timeout: float = 20.0) -> dict:
    """Wait until replica `index` has applied everything the leader has committed."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = cluster.status()
        leader = next((s for s in statuses if s["role"] == "leader"), None)
        mine = next(s for s in statuses if s["replica"] == index)
        if (leader is not None and mine["applied_index"] is not None
                and mine["applied_index"] >= leader["commit_index"]):
            return {"replica": mine, "leader": leader}
        if time.monotonic() > deadline:
            return {"replica": mine, "leader": leader, "timed_out": True}
        time.sleep(0.05)


def main() -> None:
    """Run the tour; raises SystemExit(1) if any verification failed."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    checks = _Checks()
    t_start = time.perf_counter()
    started_ray = False
    if not ray.is_initialized():
        # address="local": always a private instance, never someone else's running cluster.
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 namespace="raftkv")
        started_ray = True
    cluster = client = None
    try:
        with tempfile.TemporaryDirectory(prefix="raftkv-demo-") as data_dir:
            t0 = time.perf_counter()
            cluster = start_cluster(NAME, 3, data_dir=data_dir)
            leader = cluster.leader()
            _say(f"Started 3-replica cluster {NAME!r} in {time.perf_counter() - t0:.1f} s "
                 f"(Ray up after {t0 - t_start:.1f} s); replica {leader} is the leader.")
            client = connect(NAME)

            # 1. concurrent writes: the client turns 1,000 puts into a few batches.
            t0 = time.perf_counter()
            asyncio.run(_write_all(client, KEYS))
            dt = time.perf_counter() - t0
            _say(f"Wrote {KEYS} keys from {KEYS} concurrent tasks in {dt * 1000:.0f} ms "
                 f"({KEYS / dt:,.0f} writes/s, each durable on a majority).")

            sample = range(0, KEYS, 100)
            lin_ok = sum(1 for i in sample if (kv := client.get(_key(i))) is not None and kv.value == _value(i))
            checks.check(lin_ok == len(sample), f"linearizable reads: {lin_ok} of {len(sample)} correct")
            # A serializable read may be served by a lagging follower: absent is allowed, wrong is not.
            ser = [client.get(_key(i), serializable=True) for i in sample]
            ser_fresh = sum(1 for i, kv in zip(sample, ser) if kv is not None and kv.value == _value(i))
            ser_wrong = sum(1 for i, kv in zip(sample, ser) if kv is not None and kv.value != _value(i))
            checks.check(ser_wrong == 0, f"serializable reads: {ser_wrong} returned a wrong value")
            _say(f"Read back {len(sample)} keys: {lin_ok} linearizable reads correct; "
                 f"{ser_fresh} of {len(sample)} serializable (local replica) reads already up to date.")

            # 2. compare-and-swap, a transaction, a prefix read.
            client.put("demo/config", "v1")
            swapped = client.replace("demo/config", "v1", "v2")
            stale = client.replace("demo/config", "v1", "v3")
            final = client.get("demo/config")
            checks.check(swapped and not stale and final is not None and final.value == "v2",
                         f"compare-and-swap: swapped={swapped} stale_swapped={stale} value={final}")
            _say(f"Compare-and-swap v1->v2 succeeded={swapped}; a second swap from stale v1 succeeded={stale}.")

            txn = client.txn(compare=[client.value("demo/config") == "v2"],
                             success=[Put("demo/txn", "committed"), Range(_key(7))],
                             failure=[Put("demo/txn", "aborted")])
            got7 = txn.responses[1].kvs[0].value if txn.succeeded and len(txn.responses) > 1 else None
            checks.check(txn.succeeded and got7 == _value(7), f"txn: succeeded={txn.succeeded} read={got7!r}")
            _say(f"Transaction (if config == v2 then put + get) succeeded={txn.succeeded} "
                 f"at revision {txn.header.revision}.")

            some = client.get_prefix(f"{PREFIX}00")
            checks.check(len(some) == 100, f"prefix read: {len(some)} keys under {PREFIX}00, expected 100")
            _say(f"Prefix get {PREFIX}00* returned {len(some)} keys, sorted: {some[0].key} .. {some[-1].key}.")

            # 3. kill the leader; time until a write succeeds again.
            dead = cluster.leader()
            t0 = time.perf_counter()
            cluster.kill_replica(dead)
            client.put("demo/after-failover", "ok")  # the client retries until a new leader commits it
            failover_ms = (time.perf_counter() - t0) * 1000
            new_leader = cluster.leader()
            checks.check(new_leader != dead, f"fail-over: leader is still {dead}")
            _say(f"Killed leader replica {dead}; a write succeeded again after {failover_ms:.0f} ms "
                 f"(new leader: replica {new_leader}).")
            good = _verify_all(client, checks, "after fail-over")
            _say(f"Verified {good} of {KEYS} keys with 2 of 3 replicas up.")

            # 4. bring the killed replica back from its data directory.
            t0 = time.perf_counter()
            cluster.restart_replica(dead)
            st = _wait_caught_up(cluster, dead)
            mine = st["replica"]
            checks.check(not st.get("timed_out"), f"restarted replica {dead} did not catch up: {st}")
            _say(f"Restarted replica {dead} from disk; caught up in {(time.perf_counter() - t0) * 1000:.0f} ms "
                 f"(role {mine['role']}, term {mine['term']}, applied {mine['applied_index']} "
                 f"of commit {st['leader']['commit_index'] if st['leader'] else '?'}).")

            # 5. replace a replica by a new member.
            t0 = time.perf_counter()
            new = cluster.add_replica()
            cluster.remove_replica(dead)
            members = cluster.indices
            checks.check(members == sorted({0, 1, 2, new} - {dead}), f"membership after replacing: {members}")
            _say(f"Replaced replica {dead} by new member {new} (joined as a learner, caught up, promoted; "
                 f"then {dead} removed) in {(time.perf_counter() - t0) * 1000:.0f} ms; members now {members}.")
            good = _verify_all(client, checks, "after the membership change")

            # 6. full stop, full start from the same directory.
            client.close()
            client = None
            cluster.stop()
            cluster = None
            t0 = time.perf_counter()
            cluster = start_cluster(NAME, 3, data_dir=data_dir)
            client = connect(NAME)
            good = _verify_all(client, checks, "after full restart")
            cfg = client.get("demo/config")
            checks.check(cfg is not None and cfg.value == "v2", f"after full restart: demo/config is {cfg}")
            checks.check(cluster.indices == members, f"after full restart: members {cluster.indices}, not {members}")
            _say(f"Stopped all replicas and started them again from disk in "
                 f"{(time.perf_counter() - t0) * 1000:.0f} ms: {good} of {KEYS} keys back, "
                 f"store at revision {client.get_range('demo/config').header.revision}.")
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
            except Exception:
                pass
        if started_ray:
            ray.shutdown()
    if checks.failures:
        _say(f"{len(checks.failures)} check(s) FAILED.")
        raise SystemExit(1)
    _say(f"All checks passed in {time.perf_counter() - t_start:.1f} s.")


if __name__ == "__main__":
    main()
