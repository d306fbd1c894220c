"""Many Ray tasks increment one counter under a raftkv lock; the count is exact.
Then a lock holder is frozen (SIGSTOP) past its lease TTL: the lock passes
on, and the frozen holder's fenced write is refused when it wakes up.

Run: `python -m examples.distributed_lock`. Exit code 1 if a check fails.

Why the second half matters: a lock alone cannot stop a paused process from
acting on a lock it has lost (Jepsen showed this against etcd 3.4's locks).
The fencing token (strictly increasing per lock) and writes conditioned on
still holding the lock (`lock.put`, `client.txn().if_held(lock)`) can.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import ray

from client import connect
from kv.errors import LockNotHeld
from examples._common import report, start_demo_cluster

TASKS = 6
INCREMENTS = 8
COUNTER = "demo/counter"


@ray.remote(num_cpus=0)
def increment(cluster: str, times: int) -> list[int]:
    """Increment the counter `times` times, each under the lock; return the fencing tokens."""
    tokens = []
    with connect(cluster) as c:
        for _ in range(times):
            with c.lock("counter", ttl=5) as lock:
                value = int(c.get(COUNTER).value)
                lock.put(COUNTER, str(value + 1))  # refused if we lost the lock meanwhile
                tokens.append(lock.fencing_token)
    return tokens


@ray.remote(num_cpus=0)
class Holder:
    """Takes the lock, then does slow work before writing under it."""

    def __init__(self, cluster: str) -> None:
        self.c = connect(cluster)
        self.lock = None

    def pid(self) -> int:
        return os.getpid()

    def acquire(self) -> int:
        self.lock = self.c.lock("counter", ttl=2)
        self.lock.acquire()
        return self.lock.fencing_token

    def work_then_write(self, seconds: float) -> str:
        time.sleep(seconds)  # frozen by SIGSTOP in the middle of this
        try:
            self.lock.put(COUNTER, "written by a holder that lost the lock")
            return "written"
        except LockNotHeld:
            return "refused"


def main() -> int:
    cluster = start_demo_cluster("lock")
    failures = []
    try:
        with connect(cluster.name) as c:
            c.put(COUNTER, "0")
            start = time.monotonic()
            results = ray.get([increment.remote(cluster.name, INCREMENTS) for _ in range(TASKS)])
            took = time.monotonic() - start
            final = int(c.get(COUNTER).value)
            tokens = sorted(t for r in results for t in r)
            print(f"{TASKS} Ray tasks x {INCREMENTS} locked increments in {took:.1f} s: counter = {final}")
            if final != TASKS * INCREMENTS:
                failures.append(f"counter is {final}, expected {TASKS * INCREMENTS}")
            if len(set(tokens)) != len(tokens):
                failures.append("two acquisitions got the same fencing token")
            for r in results:  # per task, in acquisition order
                if r != sorted(r):
                    failures.append("fencing tokens did not increase")

            holder = Holder.remote(cluster.name)
            token = ray.get(holder.acquire.remote())
            pid = ray.get(holder.pid.remote())
            pending = holder.work_then_write.remote(1.0)
            time.sleep(0.3)
            os.kill(pid, signal.SIGSTOP)
            print(f"holder (token {token}) frozen with SIGSTOP; its 2 s lease is no longer renewed")
            try:
                t0 = time.monotonic()
                with c.lock("counter", timeout=30) as mine:
                    waited = time.monotonic() - t0
                    print(f"driver acquired the lock after {waited:.1f} s with token {mine.fencing_token}")
                    if mine.fencing_token <= token:
                        failures.append("the new holder's token is not larger")
                    mine.put(COUNTER, "new holder's value")
            finally:
                os.kill(pid, signal.SIGCONT)
            outcome = ray.get(pending, timeout=60)
            print(f"woken holder tried its write: {outcome}")
            if outcome != "refused":
                failures.append("the paused holder's fenced write was not refused")
            if c.get(COUNTER).value != "new holder's value":
                failures.append("the new holder's write was overwritten")
            ray.kill(holder)
    finally:
        cluster.stop()
    return report("distributed_lock", failures)


if __name__ == "__main__":
    sys.exit(main())
