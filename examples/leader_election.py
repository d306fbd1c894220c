"""Several Ray actors campaign in one election; only the leader does the work.
Killing the leader's actor hands leadership to another within the TTL.

Run: `python -m examples.leader_election`. Exit code 1 if a check fails.
"""

from __future__ import annotations

import sys
import threading
import time

import ray

from client import Put, connect
from client.elected import LeaderElected, leader_only
from kv.errors import NotElectionLeader, RaftKVError
from examples._common import report, start_demo_cluster

WORKERS = 3
TTL = 3.0
ELECTION = "report-writer"


@ray.remote(num_cpus=0)
class Worker(LeaderElected):
    """Campaigns on start; while leading, appends a heartbeat every 100 ms,
    each write fenced on still leading."""

    def __init__(self, cluster: str, name: str) -> None:
        self.name = name
        self.c = connect(cluster)
        self.join_election(cluster, ELECTION, value=name, ttl=TTL)
        self.done = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            if self.is_leader():
                try:
                    self.work()
                except (NotElectionLeader, RaftKVError):
                    pass
            time.sleep(0.1)

    @leader_only
    def work(self) -> None:
        r = self.c.txn().if_(self.leader_fence()).then(Put("demo/last-report", self.name)).commit()
        if r.succeeded:
            self.done += 1

    def reports(self) -> int:
        return self.done


def main() -> int:
    cluster = start_demo_cluster("election")
    failures = []
    try:
        with connect(cluster.name) as c:
            names = [f"worker-{i}" for i in range(WORKERS)]
            actors = {n: Worker.options(name=f"{cluster.name}-{n}").remote(cluster.name, n) for n in names}
            election = c.election(ELECTION)
            deadline = time.monotonic() + 30
            while election.leader() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            first = election.leader()
            print(f"elected: {first}")
            time.sleep(1.0)
            counts = dict(zip(names, ray.get([a.reports.remote() for a in actors.values()])))
            print(f"reports after 1 s: {counts}")
            if first is None or counts[first] == 0 or any(v for n, v in counts.items() if n != first):
                failures.append("work did not run on the leader only")

            killed_at = time.monotonic()
            ray.kill(actors.pop(first))
            print(f"killed {first}'s actor")
            new = None
            while time.monotonic() - killed_at < 30:
                new = election.leader()
                if new not in (None, first):
                    break
                time.sleep(0.05)
            handover = time.monotonic() - killed_at
            print(f"new leader: {new} after {handover:.1f} s (TTL {TTL:g} s)")
            if new in (None, first) or handover > TTL + 2.0:
                failures.append(f"leadership did not move within the TTL (took {handover:.1f} s)")
            time.sleep(1.0)
            last = c.get("demo/last-report")
            print(f"last report written by: {last.value if last else None}")
            if last is None or last.value != new:
                failures.append("the new leader is not doing the work")
            for a in actors.values():
                ray.kill(a)
    finally:
        cluster.stop()
    return report("leader_election", failures)


if __name__ == "__main__":
    sys.exit(main())
