"""Self-healing: replace a replica that is lost for too long (`auto_replace`).

A `Healer` is one thread that looks at a cluster's members every second (or a
quarter of the grace period). A voter that is down (its actor or Ray node is
gone), unresponsive (it does not answer, e.g. frozen) or failed (its loop
stopped on a storage error) for `grace` seconds is replaced, one at a time:
`Cluster.add_replica` starts a fresh replica on a Ray node with the fewest
members (not the lost one's), which joins as a learner and is promoted once
caught up; then `Cluster.remove_replica` takes the lost one out. Nothing
happens without a leader (every change goes through the log). A partitioned
replica still answers Ray calls and is not replaced.

The healer of a job-scoped cluster is a thread of the process that started
it; a detached cluster's is a `Supervisor`: a detached actor
(`raftkv/<name>/supervisor`) that Ray restarts elsewhere if its node fails.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from raft_actors.cluster import Cluster

log = structlog.get_logger(__name__)


class Healer:
    """Replaces lost voters (see the module docstring). One thread; every
    `interval` it looks at the members' status; a voter down or unresponsive
    for `grace` seconds is replaced (add a fresh replica, then remove the
    lost one), one at a time. If the cluster already has as many healthy
    voters as it should (a replacement was added but the removal did not
    happen), it only removes."""

    def __init__(self, cluster: Cluster, grace: float) -> None:
        self.cluster = cluster
        self.grace = grace
        self.size = len(cluster.voters)  # the number of voters to keep
        self.interval = min(1.0, grace / 4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"raftkv-healer-{cluster.name}", daemon=True)
        self._lost_since: dict[int, float] = {}
        self.replaced: list[tuple[int, int]] = []  # (lost index, new index)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=150)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # keep healing; the next round tries again
                log.warning("healer.round_failed", cluster=self.cluster.name, error=repr(exc))

    def check(self) -> None:
        c = self.cluster
        statuses = c.status(timeout=2.0)
        now = time.monotonic()
        lost = {s["replica"] for s in statuses if s["role"] in ("down", "unresponsive", "failed")}
        for i in list(self._lost_since):
            if i not in lost:
                del self._lost_since[i]
        for i in lost:
            self._lost_since.setdefault(i, now)
        due = sorted(i for i, t in self._lost_since.items() if now - t >= self.grace and i in c.indices)
        if not lost:
            self.size = len(c.voters)  # changes made by hand set the size to keep
        if not due or not any(s["role"] == "leader" for s in statuses) or self._stop.is_set():
            return
        lost_index = due[0]
        healthy_voters = [i for i in c.voters if i not in lost]
        log.warning("healer.replacing", cluster=c.name, replica=lost_index,
                    lost_for_s=round(now - self._lost_since[lost_index], 1))
        new = None
        if lost_index in c.voters and len(healthy_voters) < self.size:
            avoid = {c._nodes[i] for i in lost if i in c._nodes}
            new = c.add_replica(avoid_nodes=avoid)
        c.remove_replica(lost_index)
        self._lost_since.pop(lost_index, None)
        self.replaced.append((lost_index, new if new is not None else -1))
        log.warning("healer.replaced", cluster=c.name, lost=lost_index, new=new, members=c.indices)


class Supervisor:
    """The healer of a detached cluster, as a detached actor of its own."""

    def __init__(self, name: str, namespace: str, grace: float) -> None:
        from raft_actors.cluster import get_cluster

        self.cluster = get_cluster(name, namespace)
        self.cluster._healer = Healer(self.cluster, grace)
        self.cluster._healer.start()

    def ping(self) -> bool:
        return True

    def replaced(self) -> list:
        healer = self.cluster._healer
        return list(healer.replaced) if healer is not None else []

    def stop(self) -> None:
        if self.cluster._healer is not None:
            self.cluster._healer.stop()
