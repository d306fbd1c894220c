"""Starting, finding, faulting and stopping a cluster of replica actors.

A cluster is N `RaftNode` actors named `raftkv/<name>/<i>` in a Ray namespace
(default "raftkv"), so any job attached to the same Ray cluster finds them by
name. Replica i keeps its log under `<data_dir>/replica-<i>`; starting a
cluster again with the same name and data directory brings its data back.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import ray
import structlog

from kv.errors import ClusterExists, ClusterNotFound, InvalidRequest, StorageError, Unavailable
from raft_actors.node import NodeOptions, RaftNode, actor_name

log = structlog.get_logger(__name__)

DEFAULT_NAMESPACE = "raftkv"


def default_data_dir(name: str) -> str:
    return os.path.join(tempfile.gettempdir(), "raftkv", name)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or "/" in name or len(name) > 200:
        raise InvalidRequest(f"cluster name must be a non-empty str without '/', got {name!r}")
    return name


class Cluster:
    """Handle on a running cluster: lifecycle, fault injection and status.

    Replicas are addressed by index, 0 .. replicas-1.
    """

    def __init__(self, name: str, replicas: int, data_dir: str, namespace: str, detached: bool,
                 options: NodeOptions) -> None:
        self.name = name
        self.replicas = replicas
        self.data_dir = data_dir
        self.namespace = namespace
        self.detached = detached
        self.options = options
        self._handles: dict[int, Any] = {}
        self._cuts: set[tuple[int, int]] = set()  # (src, dst) replica pairs that cannot talk
        self._nodes: dict[int, str] = {}  # replica index -> Ray node id it was placed on

    # -- lifecycle -------------------------------------------------------
    def _spawn(self, index: int) -> Any:
        opts: dict[str, Any] = dict(
            name=actor_name(self.name, index),
            namespace=self.namespace,
            num_cpus=0,
            max_restarts=0,
            max_task_retries=0,
            max_concurrency=10_000,
            scheduling_strategy=self._placement_strategy(index),
        )
        if self.detached:
            opts["lifetime"] = "detached"
        handle = ray.remote(RaftNode).options(**opts).remote(
            self.name, index, self.replicas, self.namespace, self.data_dir, self.options, self.detached)
        self._handles[index] = handle
        return handle

    def _placement_strategy(self, index: int) -> Any:
        """Where replica `index` runs: one replica per Ray node while there are
        enough nodes, and a restarted replica on the node that holds its data.

        Nodes are taken in address order, so the same set of nodes gives the
        same placement when a stopped cluster is started again (its data
        directories are local to the nodes).
        """
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        alive = sorted((n for n in ray.nodes() if n.get("Alive")),
                       key=lambda n: (n.get("NodeManagerAddress", ""), n["NodeID"]))
        ids = [n["NodeID"] for n in alive]
        if len(ids) <= 1:
            return "DEFAULT"
        node = self._nodes.get(index)
        if node is not None and node not in ids:
            # Its data directory went with the node. A replica that lost its
            # log must not come back under its old identity (it could vote
            # twice in a term); it has to be replaced by a new member.
            raise StorageError(f"replica {index} of {self.name!r} lived on Ray node {node}, which is gone with "
                               f"its data; it cannot be restarted under its old identity")
        if node is None:
            node = ids[index % len(ids)]
        self._nodes[index] = node
        return NodeAffinitySchedulingStrategy(node_id=node, soft=False)

    def _start(self, indices: list[int], timeout: float = 60.0) -> None:
        refs = [self._spawn(i).start.remote() for i in indices]
        try:
            ray.get(refs, timeout=timeout)
        except ray.exceptions.RayActorError as exc:
            # The actor's constructor failed: most often a corrupt, unreadable
            # or already used data directory. Surface the replica's own words.
            for i in indices:
                self._kill(i)
            text = str(exc)
            detail = text
            for marker in ("CorruptLog: ", "StorageError: "):
                if marker in text:
                    detail = text.split(marker, 1)[1].strip().splitlines()[0]
                    break
            raise StorageError(f"a replica of cluster {self.name!r} could not open its log: {detail}") from exc

    def handle(self, index: int) -> Any:
        """The actor handle of replica `index` (raises if it is down)."""
        self._check_index(index)
        if index not in self._handles:
            self._handles[index] = ray.get_actor(actor_name(self.name, index), namespace=self.namespace)
        return self._handles[index]

    def kill_replica(self, index: int) -> None:
        """Kill replica `index`'s actor at once (like a crash: no graceful close)."""
        self._check_index(index)
        self._kill(index)
        log.info("cluster.kill", cluster=self.name, replica=index)

    def restart_replica(self, index: int, timeout: float = 60.0) -> None:
        """Start replica `index` again from its data directory (kill it first if running)."""
        self._check_index(index)
        self._kill(index)
        self._wait_gone(index)
        self._start([index], timeout)
        if self._cuts:
            self._push_faults(only=index)  # a restarted replica keeps the partition it was in
        log.info("cluster.restart", cluster=self.name, replica=index)

    def stop(self) -> None:
        """Close every replica gracefully (logs flushed), then kill the actors."""
        refs = []
        for i in range(self.replicas):
            try:
                refs.append(self.handle(i).close.remote())
            except ValueError:
                continue
        # Wait for every close, not just until the first error (a replica that
        # is already dead has nothing to flush).
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=30)
        for ref in ready:
            try:
                ray.get(ref)
            except Exception as exc:
                log.warning("cluster.stop_close_failed", cluster=self.name, error=type(exc).__name__)
        for i in range(self.replicas):
            self._kill(i)
        for i in range(self.replicas):
            self._wait_gone(i)
        log.info("cluster.stopped", cluster=self.name)

    # -- fault injection -------------------------------------------------
    def partition(self, groups: list[list[int]]) -> None:
        """Cut the network between groups of replica indices (both ways).

        A replica in no group is cut off from everyone. Replaces earlier cuts.
        """
        where: dict[int, int] = {}
        for g, members in enumerate(groups):
            for i in members:
                self._check_index(i)
                where[i] = g
        n = self.replicas
        self._cuts = {(a, b) for a in range(n) for b in range(n)
                      if a != b and where.get(a, -1 - a) != where.get(b, -100 - b)}
        self._push_faults()

    def block(self, src: int, dst: int) -> None:
        """One-way cut: messages from replica `src` to replica `dst` are lost
        (`dst` still reaches `src`). Adds to the current cuts."""
        self._check_index(src)
        self._check_index(dst)
        if src == dst:
            raise InvalidRequest("a replica cannot be cut off from itself")
        self._cuts.add((src, dst))
        self._push_faults()

    def heal(self) -> None:
        """Undo `partition`, `block` and every other injected fault."""
        self._cuts = set()
        self._push_faults()

    def _push_faults(self, only: int | None = None) -> None:
        refs = []
        for i in range(self.replicas) if only is None else [only]:
            out = sorted(b for a, b in self._cuts if a == i)
            inc = sorted(a for a, b in self._cuts if b == i)
            try:
                refs.append(self.handle(i).set_faults.remote(out, 0.0, 0.0, inc))
            except ValueError:
                continue  # a replica that is down gets the cuts when it restarts
        ray.get(refs, timeout=30)

    def transfer_leadership(self, to: int, timeout: float = 10.0) -> None:
        """Move leadership to replica `to` gracefully (it catches up, then
        campaigns at once on TimeoutNow). Waits until it leads.

        Raises:
            Unavailable: `to` did not become leader within `timeout`.
        """
        self._check_index(to)
        leader = self.leader(timeout)
        if leader == to:
            return
        ray.get(self.handle(leader).transfer_leadership.remote(to), timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status(timeout=2.0)[to]["role"] == "leader":
                return
            time.sleep(0.02)
        raise Unavailable(f"replica {to} did not take over leadership within {timeout} s")

    # -- status ----------------------------------------------------------
    def status(self, timeout: float = 5.0) -> list[dict]:
        """One mapping per replica: role, term, commit_index, applied_index, leader...

        A replica that is gone shows role "down"; one that does not answer
        within `timeout` (busy, e.g. loading a large snapshot) "unresponsive".
        """
        out: list[dict] = []
        for i in range(self.replicas):
            try:
                out.append(ray.get(self.handle(i).status.remote(), timeout=timeout))
            except ray.exceptions.GetTimeoutError:
                # Busy (e.g. loading a large snapshot), not gone. Keep the
                # handle: for a job-scoped cluster it is what keeps the actor
                # alive, and dropping it would kill the replica.
                out.append({"replica": i, "role": "unresponsive", "term": None, "leader": None,
                            "commit_index": None, "applied_index": None})
            except Exception:
                self._handles.pop(i, None)
                out.append({"replica": i, "role": "down", "term": None, "leader": None,
                            "commit_index": None, "applied_index": None})
        return out

    def leader(self, timeout: float = 10.0) -> int:
        """Wait for a leader and return its index; raises Unavailable after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            for s in self.status(timeout=2.0):
                if s["role"] == "leader":
                    return s["replica"]
            if time.monotonic() > deadline:
                raise Unavailable(f"cluster {self.name!r} has no leader after {timeout} s")
            time.sleep(0.05)

    # -- helpers -----------------------------------------------------------
    def _check_index(self, index: int) -> None:
        if not isinstance(index, int) or not 0 <= index < self.replicas:
            raise InvalidRequest(f"replica index must be in 0..{self.replicas - 1}, got {index!r}")

    def _kill(self, index: int) -> None:
        try:
            handle = self._handles.pop(index, None) or ray.get_actor(actor_name(self.name, index), namespace=self.namespace)
        except ValueError:
            return
        ray.kill(handle, no_restart=True)

    def _wait_gone(self, index: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ray.get_actor(actor_name(self.name, index), namespace=self.namespace)
            except ValueError:
                return
            time.sleep(0.05)
        raise Unavailable(f"replica {index} of {self.name!r} did not stop within {timeout} s")

    def __repr__(self) -> str:
        return f"Cluster(name={self.name!r}, replicas={self.replicas}, data_dir={self.data_dir!r})"


def start_cluster(name: str, replicas: int = 3, data_dir: str | None = None, *, detached: bool = False,
                  namespace: str = DEFAULT_NAMESPACE, options: NodeOptions | None = None,
                  wait_for_leader: bool = True) -> Cluster:
    """Start (or bring back from `data_dir`) a cluster of `replicas` Raft replicas.

    Args:
        name: cluster name; clients `connect(name)` with it.
        replicas: number of voting replicas (an odd number: 3 or 5).
        data_dir: where replicas keep their logs (default: <tmp>/raftkv/<name>).
            Starting again with the same directory recovers the data.
        detached: keep the cluster running after this job ends.
        namespace: Ray namespace of the replica actors.
        options: replica timing (see NodeOptions).
        wait_for_leader: block until a leader is elected.
    Returns:
        A `Cluster` handle.
    Raises:
        ClusterExists: a cluster of this name is running in the namespace.
        StorageError: a replica could not open its log (e.g. corrupt data).
        InvalidRequest: bad arguments.
    """
    _check_name(name)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or not 1 <= replicas <= 9:
        raise InvalidRequest(f"replicas must be an int in 1..9, got {replicas!r}")
    if not ray.is_initialized():
        ray.init(namespace=namespace, log_to_driver=True)
    for i in range(replicas):
        try:
            ray.get_actor(actor_name(name, i), namespace=namespace)
        except ValueError:
            continue
        raise ClusterExists(f"cluster {name!r} is already running in namespace {namespace!r}; "
                            f"use client.connect({name!r}) or stop it first")
    data_dir = os.path.abspath(data_dir or default_data_dir(name))
    os.makedirs(data_dir, exist_ok=True)
    cluster = Cluster(name, replicas, data_dir, namespace, detached, options or NodeOptions())
    cluster._start(list(range(replicas)))
    if wait_for_leader:
        cluster.leader(timeout=30.0)
    log.info("cluster.started", cluster=name, replicas=replicas, data_dir=data_dir)
    return cluster


def get_cluster(name: str, namespace: str = DEFAULT_NAMESPACE) -> Cluster:
    """A `Cluster` handle on a running cluster started elsewhere.

    Raises:
        ClusterNotFound: no replica of that name answers in the namespace.
    """
    _check_name(name)
    if not ray.is_initialized():
        ray.init(address="auto", namespace=namespace)
    try:
        first = ray.get_actor(actor_name(name, 0), namespace=namespace)
    except ValueError:
        first = None
    info = None
    for i in range(9):
        try:
            h = first if i == 0 and first is not None else ray.get_actor(actor_name(name, i), namespace=namespace)
            info = ray.get(h.describe.remote(), timeout=10)
            break
        except Exception:
            continue
    if info is None:
        raise ClusterNotFound(f"no cluster named {name!r} in Ray namespace {namespace!r}; start it with "
                              f"raft_actors.start_cluster({name!r}) or `raftkv start {name}`")
    cluster = Cluster(name, info["replicas"], info["data_dir"], namespace, info["detached"], info["options"])
    for s in cluster.status():
        if s.get("node_id"):
            cluster._nodes[s["replica"]] = s["node_id"]
    return cluster
