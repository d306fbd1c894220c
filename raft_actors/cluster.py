"""Starting, finding, changing, healing and stopping a cluster of replica actors.

A cluster is a set of `RaftNode` actors named `raftkv/<name>/<i>` in a Ray
namespace (default "raftkv"), so any job attached to the same Ray cluster
finds them by name. Replica i keeps its log under `<data_dir>/replica-<i>`;
starting a cluster again with the same name and data directory brings its
data back.

Membership: a new cluster's members are replicas 0 .. n-1. `add_replica`
starts a fresh replica under the next unused index (indices are never
reused: the Raft log remembers the highest one ever a member), adds it as a
learner, and promotes it to voter once it has caught up; `remove_replica`
hands leadership away first if it removes the leader. Every change goes
through the Raft log one at a time; a change that would leave too few
responsive voters for a quorum is refused (`ConfChangeRefused`). Each
replica writes the last committed configuration next to its log
(`members.json`), which is how a cluster started again from its data
directories knows who its members are.

Self-healing (`auto_replace=True`): see `raft_actors.healer`.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from typing import Any

import ray
import structlog

from kv.errors import ClusterExists, ClusterNotFound, InvalidRequest, StorageError, Unavailable
from raft_actors.membership import ConfChangeRefused, Refusal
from raft_actors.node import LOST_DATA, NodeOptions, RaftNode, actor_name, read_members_file, replica_dir

log = structlog.get_logger(__name__)

DEFAULT_NAMESPACE = "raftkv"
SUPERVISOR = "supervisor"  # actor name suffix of a detached cluster's healer
# Refusals worth waiting out (the others mean the change does not fit).
_TRANSIENT = {Refusal.PENDING, Refusal.TERM_NOT_COMMITTED, Refusal.TRANSFERRING, Refusal.NOT_LEADER}
QUORUM_DOUBT_S = 2.0  # how long a would-lose-quorum refusal is retried before it is believed


def default_data_dir(name: str) -> str:
    return os.path.join(tempfile.gettempdir(), "raftkv", name)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or "/" in name or len(name) > 200:
        raise InvalidRequest(f"cluster name must be a non-empty str without '/', got {name!r}")
    return name


def replica_indices(name: str, namespace: str) -> list[int]:
    """Indices of the replica actors of cluster `name` that Ray knows by name
    (alive or starting), sorted. Asks Ray's control service: not for hot paths."""
    prefix = f"raftkv/{name}/"
    out = []
    for a in ray.util.list_named_actors(all_namespaces=True):
        n = a["name"] if isinstance(a, dict) else a
        if isinstance(a, dict) and a.get("namespace") != namespace:
            continue
        if n.startswith(prefix) and n[len(prefix):].isdigit():
            out.append(int(n[len(prefix):]))
    return sorted(out)


def describe_cluster(name: str, namespace: str, timeout: float = 10.0) -> dict | None:
    """The `describe()` of the member that knows the newest configuration
    among the replicas that answer, or None if none does."""
    best = None
    refs = []
    for i in replica_indices(name, namespace):
        try:
            refs.append(ray.get_actor(actor_name(name, i), namespace=namespace).describe.remote())
        except ValueError:
            continue
    if not refs:
        return None
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    for ref in ready:
        try:
            info = ray.get(ref)
        except Exception:
            continue
        if info["members"] and (best is None or info["conf_index"] > best["conf_index"]):
            best = info
    return best


def _local_indices(data_dir: str) -> set[int]:
    """Replica indices with a directory (current or retired) under `data_dir` on this machine."""
    out = set()
    try:
        names = os.listdir(data_dir)
    except OSError:
        return out
    for n in names:
        head = n.split(".", 1)[0]
        if head.startswith("replica-") and head[8:].isdigit():
            out.add(int(head[8:]))
    return out


def saved_members(data_dir: str) -> dict | None:
    """The newest committed configuration recorded by the replicas whose
    directories are under `data_dir` on this machine (see `members.json`), or None."""
    best = None
    for i in _local_indices(data_dir):
        info = read_members_file(replica_dir(data_dir, i))
        if info is not None and (best is None or info["conf_index"] > best["conf_index"]):
            best = info
    return best


def _no_status(index: int, role: str) -> dict:
    return {"replica": index, "role": role, "term": None, "leader": None, "commit_index": None,
            "applied_index": None}


def _alive_nodes() -> list[str]:
    alive = sorted((n for n in ray.nodes() if n.get("Alive")),
                   key=lambda n: (n.get("NodeManagerAddress", ""), n["NodeID"]))
    return [n["NodeID"] for n in alive]


class Cluster:
    """Handle on a running cluster: lifecycle, membership, fault injection and status.

    Replicas are addressed by index; a new cluster has 0 .. replicas-1, and
    replicas added later get new indices (`indices` lists the members).
    """

    def __init__(self, name: str, members: list[int], data_dir: str, namespace: str, detached: bool,
                 options: NodeOptions, voters: list[int] | None = None) -> None:
        self.name = name
        self.data_dir = data_dir
        self.namespace = namespace
        self.detached = detached
        self.options = options
        self._members: list[int] = sorted(members)
        self._voters: list[int] = sorted(self._members if voters is None else voters)
        self._conf_index = -1
        self._handles: dict[int, Any] = {}
        self._cuts: set[tuple[int, int]] = set()  # (src, dst) replica pairs that cannot talk
        self._nodes: dict[int, str] = {}  # replica index -> Ray node id it was placed on
        self._healer: Any = None  # a raft_actors.healer.Healer while auto_replace runs here
        self._lock = threading.RLock()  # one membership change at a time from this handle

    @property
    def indices(self) -> list[int]:
        """The members' replica indices (voters and learners), sorted, as last
        learned (`status()`, `members()` and changes made through this handle
        refresh it; a healer or another process may have changed it since)."""
        return list(self._members)

    @property
    def voters(self) -> list[int]:
        return list(self._voters)

    @property
    def replicas(self) -> int:
        """How many members the cluster has (voters and learners)."""
        return len(self._members)

    # -- lifecycle -------------------------------------------------------
    def _spawn(self, index: int, *, join: bool = False, expect_data: bool = False,
               avoid: set[str] | None = None) -> Any:
        opts: dict[str, Any] = dict(
            name=actor_name(self.name, index),
            namespace=self.namespace,
            num_cpus=0,
            max_restarts=0,
            max_task_retries=0,
            max_concurrency=10_000,
            scheduling_strategy=self._placement_strategy(index, avoid),
        )
        if self.detached:
            opts["lifetime"] = "detached"
        handle = ray.remote(RaftNode).options(**opts).remote(
            self.name, index, self._voters, self.namespace, self.data_dir, self.options, self.detached,
            join=join, expect_data=expect_data)
        self._handles[index] = handle
        return handle

    def _placement_strategy(self, index: int, avoid: set[str] | None = None) -> Any:
        """Where replica `index` runs: one replica per Ray node while there are
        enough nodes, and a restarted replica on the node that holds its data.

        Nodes are taken in address order, so the same set of nodes gives the
        same placement when a stopped cluster is started again (its data
        directories are local to the nodes). A new member (`avoid` given)
        goes to the node with the fewest members, not one in `avoid`.
        """
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ids = _alive_nodes()
        if len(ids) <= 1:
            return "DEFAULT"
        node = self._nodes.get(index)
        if node is not None and node not in ids:
            # Its data directory went with the node. A replica that lost its
            # log must not come back under its old identity (it could vote
            # twice in a term); it has to be replaced by a new member.
            raise StorageError(f"replica {index} of {self.name!r} lived on Ray node {node}, which is gone with "
                               f"its data; it cannot be restarted under its old identity")
        if node is None and avoid is not None:
            load = {n: 0 for n in ids}
            for i, n in self._nodes.items():
                if i in self._members and n in load:
                    load[n] += 1
            node = min(ids, key=lambda n: (n in avoid, load[n], ids.index(n)))
        elif node is None:
            node = ids[index % len(ids)]
        self._nodes[index] = node
        return NodeAffinitySchedulingStrategy(node_id=node, soft=False)

    def _start(self, indices: list[int], timeout: float = 60.0, *, expect_data: bool = False,
               join: bool = False, avoid: set[str] | None = None, tolerate: bool = False) -> dict[int, str]:
        """Start replicas `indices` and wait until each has opened its log.

        Raises StorageError (after killing them all) if one could not open its
        log, unless `tolerate`: then only those that failed are killed, and
        the failures are returned as {index: reason}.
        """
        refs = {i: self._spawn(i, expect_data=expect_data, join=join, avoid=avoid).start.remote() for i in indices}
        failed: dict[int, str] = {}
        deadline = time.monotonic() + timeout
        for i, ref in refs.items():
            try:
                ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
            except ray.exceptions.RayActorError as exc:
                # The actor's constructor failed: most often a corrupt, unreadable
                # or already used data directory. Surface the replica's own words.
                text = str(exc)
                detail = text
                for marker in ("CorruptLog: ", "StorageError: "):
                    if marker in text:
                        detail = text.split(marker, 1)[1].strip().splitlines()[0]
                        break
                failed[i] = detail
        for i in failed if tolerate else (indices if failed else []):
            self._kill(i)
        if failed and not tolerate:
            raise StorageError(f"a replica of cluster {self.name!r} could not open its log: "
                               f"{next(iter(failed.values()))}")
        return failed

    def handle(self, index: int) -> Any:
        """The actor handle of replica `index` (raises if it is down)."""
        self._check_index(index)
        return self._handle(index)

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            self._handles[index] = ray.get_actor(actor_name(self.name, index), namespace=self.namespace)
        return self._handles[index]

    def kill_replica(self, index: int) -> None:
        """Kill replica `index`'s actor at once (like a crash: no graceful close)."""
        self._check_index(index)
        self._kill(index)
        log.info("cluster.kill", cluster=self.name, replica=index)

    def restart_replica(self, index: int, timeout: float = 60.0) -> None:
        """Start member `index` again from its data directory (kill it first if running).

        Raises:
            StorageError: its data directory is empty or gone (with its Ray
                node, or deleted): it cannot come back under its old
                identity; remove it and add a new replica instead.
        """
        self._check_index(index)
        self._kill(index)
        self._wait_gone(index)
        self._start([index], timeout, expect_data=True)
        if self._cuts:
            self._push_faults(only=index)  # a restarted replica keeps the partition it was in
        log.info("cluster.restart", cluster=self.name, replica=index)

    def stop(self) -> None:
        """Close every replica gracefully (logs flushed), then kill the actors.
        Stops the healer first, so it does not replace what is being stopped."""
        self._stop_healer()
        refs = []
        members = sorted(set(self._members) | set(replica_indices(self.name, self.namespace)))
        for i in members:
            try:
                refs.append(self._handle(i).close.remote())
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
        for i in members:
            self._kill(i)
        for i in members:
            self._wait_gone(i)
        log.info("cluster.stopped", cluster=self.name)

    # -- membership --------------------------------------------------------
    def members(self, timeout: float = 10.0) -> list[dict]:
        """The current configuration as the leader knows it: one mapping per
        member, `{"replica", "voter", "role", "node_id"}` (role as in
        `status()`: leader, follower, learner, down...)."""
        self.leader(timeout)
        by_index = {s["replica"]: s for s in self.status()}
        return [{"replica": i, "voter": i in self._voters, "role": by_index.get(i, {}).get("role", "down"),
                 "node_id": by_index.get(i, {}).get("node_id") or self._nodes.get(i)} for i in self._members]

    def add_replica(self, timeout: float = 120.0, *, avoid_nodes: set[str] | None = None) -> int:
        """Start a new replica, add it as a learner, and promote it to voter
        once it has caught up (through InstallSnapshot when the leader's log
        no longer reaches back far enough). Returns its index.

        It is placed on the Ray node with the fewest members (not one in
        `avoid_nodes`, when there is a choice).

        Raises:
            Unavailable: no leader, or it did not catch up within `timeout`
                (it is then removed again, and nothing else changed).
            ConfChangeRefused: the leader refused the change (e.g. another
                change is pending for too long).
        """
        with self._lock:
            deadline = time.monotonic() + timeout
            info = self._describe_leader(timeout)
            # Past every index the log ever had, and every one that left a
            # directory or an actor behind (an add that failed half-way).
            used = set(self._members) | set(replica_indices(self.name, self.namespace)) | _local_indices(self.data_dir)
            index = max(info["next_index"], max(used, default=-1) + 1)
            started = time.monotonic()
            self._start([index], max(1.0, deadline - time.monotonic()), join=True, avoid=set(avoid_nodes or ()))
            try:
                self._change("add_learner", index, deadline)
                self._change("promote", index, deadline, wait_caught_up=True)
            except BaseException:
                log.warning("cluster.add_failed", cluster=self.name, replica=index)
                try:
                    self._change("remove", index, time.monotonic() + 30)
                except Exception as exc:
                    log.warning("cluster.add_undo_failed", cluster=self.name, replica=index, error=repr(exc))
                self._kill(index)
                raise
            log.info("cluster.replica_added", cluster=self.name, replica=index,
                     seconds=round(time.monotonic() - started, 3), node=self._nodes.get(index))
            return index

    def remove_replica(self, index: int, timeout: float = 60.0) -> None:
        """Remove member `index` from the configuration, then stop it and move
        its data directory aside (`replica-<i>.removed-<time>`), so it never
        comes back under its identity. A leader hands leadership to another
        voter first.

        Raises:
            ConfChangeRefused: the change would leave too few responsive
                voters for a quorum (reason WOULD_LOSE_QUORUM, once the
                leader has said so for QUORUM_DOUBT_S seconds), or it is the
                last voter (LAST_VOTER). Nothing changed.
            Unavailable: no leader within `timeout`.
        """
        self._check_index(index)
        with self._lock:
            deadline = time.monotonic() + timeout
            leader = self.leader(timeout)
            if leader == index:
                others = [s for s in self.status(timeout=2.0)
                          if s["replica"] != index and s["replica"] in self._voters
                          and s["role"] in ("follower", "candidate")]
                if len(self._voters) == 1:
                    raise ConfChangeRefused(f"replica {index} is the last voter; add and promote another first",
                                            Refusal.LAST_VOTER)
                if not others:
                    raise ConfChangeRefused(f"replica {index} is the leader and no other voter is up to take "
                                            "over; add a replica first", Refusal.WOULD_LOSE_QUORUM)
                target = max(others, key=lambda s: s.get("applied_index") or 0)["replica"]
                self.transfer_leadership(target, timeout=max(1.0, deadline - time.monotonic()))
            self._change("remove", index, deadline)
            try:
                ray.get(self._handle(index).retire.remote(), timeout=10)
            except Exception as exc:  # a lost replica has nothing to retire
                log.info("cluster.retire_skipped", cluster=self.name, replica=index, error=type(exc).__name__)
            self._kill(index)
            self._nodes.pop(index, None)
            log.info("cluster.replica_removed", cluster=self.name, replica=index)

    def _describe_leader(self, timeout: float) -> dict:
        leader = self.leader(timeout)
        return ray.get(self._handle(leader).describe.remote(), timeout=timeout)

    def _change(self, kind: str, index: int, deadline: float, wait_caught_up: bool = False) -> None:
        """Propose one membership change at the leader and wait until it is
        committed, retrying refusals that pass (and, for a promotion, a
        learner that is still catching up) until `deadline`."""
        last = "no leader"
        target: int | None = None
        quorum_doubt: float | None = None  # until when a WOULD_LOSE_QUORUM refusal is asked again
        while time.monotonic() < deadline:
            if target is None:
                try:
                    target = self.leader(max(0.1, min(10.0, deadline - time.monotonic())))
                except Unavailable as exc:
                    last = str(exc)
                    continue
            try:
                status, payload = ray.get(self._handle(target).change_membership.remote(kind, index),
                                          timeout=max(1.0, min(30.0, deadline - time.monotonic())))
            except Exception as exc:
                last = f"replica {target}: {type(exc).__name__}"
                self._handles.pop(target, None)
                target = None
                time.sleep(0.1)
                continue
            if status == "ok":
                self._set_members(payload)
                log.info("cluster.membership", cluster=self.name, change=kind, replica=index, **payload)
                return
            if status == "not_leader":
                target = payload
                last = "leadership moved"
                if payload is None:
                    time.sleep(0.1)
                continue
            if status == "timeout":
                target, last = None, "the change did not commit in time"
                continue
            reason, message = payload
            refusal = Refusal(reason)
            done = self._already(kind, index, target)
            if done:
                return  # an earlier attempt that timed out or lost its leader did commit
            if refusal == Refusal.WOULD_LOSE_QUORUM and quorum_doubt is None:
                # A leader elected a moment ago (after a hand-over, say) has
                # not heard from every live voter yet; ask again for a while
                # before believing they are gone.
                quorum_doubt = time.monotonic() + QUORUM_DOUBT_S
            if (done is None or refusal in _TRANSIENT
                    or (wait_caught_up and refusal == Refusal.LEARNER_BEHIND)
                    or (refusal == Refusal.WOULD_LOSE_QUORUM and time.monotonic() < quorum_doubt)):
                last = message
                time.sleep(0.1)
                continue
            raise ConfChangeRefused(message, refusal)
        raise Unavailable(f"cluster {self.name!r}: {kind} of replica {index} did not complete in time ({last})")

    def _already(self, kind: str, index: int, at: int) -> bool | None:
        """Whether the configuration replica `at` has committed already has
        this change made; None when a change is still uncommitted there (ask
        again: it may be an earlier attempt of this one)."""
        try:
            info = ray.get(self._handle(at).describe.remote(), timeout=5)
        except Exception:
            return False
        if info["conf_index"] > info["commit_index"]:
            return None
        self._set_members(info)
        if kind == "add_learner":
            return index in info["learners"] or index in info["voters"]
        if kind == "promote":
            return index in info["voters"]
        return index not in info["members"]

    def _set_members(self, view: dict, conf_index: int | None = None) -> None:
        if conf_index is not None:
            if conf_index < self._conf_index:
                return
            self._conf_index = conf_index
        if not view["voters"]:
            return
        self._voters = sorted(view["voters"])
        self._members = sorted(view["voters"] + view["learners"])

    # -- self-healing ------------------------------------------------------
    def enable_auto_replace(self, replace_after_s: float = 30.0) -> None:
        """Replace a voter lost for longer than `replace_after_s` seconds (see
        the module docstring). For a detached cluster this starts the
        detached supervisor actor; otherwise a thread in this process."""
        if not isinstance(replace_after_s, (int, float)) or isinstance(replace_after_s, bool) or replace_after_s <= 0:
            raise InvalidRequest(f"replace_after_s must be a positive number of seconds, got {replace_after_s!r}")
        from raft_actors.healer import Healer, Supervisor

        if self.detached:
            opts = dict(name=actor_name(self.name, SUPERVISOR), namespace=self.namespace, lifetime="detached",
                        num_cpus=0, max_restarts=-1, max_concurrency=4, get_if_exists=True)
            sup = ray.remote(Supervisor).options(**opts).remote(self.name, self.namespace, float(replace_after_s))
            ray.get(sup.ping.remote(), timeout=60)
            return
        if self._healer is None:
            self._healer = Healer(self, float(replace_after_s))
            self._healer.start()

    def _stop_healer(self) -> None:
        if self._healer is not None:
            self._healer.stop()
            self._healer = None
        try:
            sup = ray.get_actor(actor_name(self.name, SUPERVISOR), namespace=self.namespace)
        except ValueError:
            return
        try:
            ray.get(sup.stop.remote(), timeout=30)
        except Exception:
            pass
        ray.kill(sup, no_restart=True)

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
        ids = self._members
        self._cuts = {(a, b) for a in ids for b in ids
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
        for i in self._members if only is None else [only]:
            out = sorted(b for a, b in self._cuts if a == i)
            inc = sorted(a for a, b in self._cuts if b == i)
            try:
                refs.append(self._handle(i).set_faults.remote(out, 0.0, 0.0, inc))
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
        ray.get(self._handle(leader).transfer_leadership.remote(to), timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(s["replica"] == to and s["role"] == "leader" for s in self._poll(2.0, stop_at_leader=True)):
                return
            time.sleep(0.02)
        raise Unavailable(f"replica {to} did not take over leadership within {timeout} s")

    # -- status ----------------------------------------------------------
    def status(self, timeout: float = 5.0) -> list[dict]:
        """One mapping per member, by index: role, term, commit_index,
        applied_index, leader, voters, learners...

        A replica that is gone shows role "down"; one that does not answer
        within `timeout` (busy, e.g. loading a large snapshot)
        "unresponsive". The member list is learned from the answers (the
        newest configuration any replica reports).
        """
        return self._poll(timeout)

    def leader(self, timeout: float = 10.0) -> int:
        """Wait for a leader and return its index; raises Unavailable after `timeout`.

        Returns as soon as a replica says it leads (one that is paused or slow
        does not hold the answer up)."""
        deadline = time.monotonic() + timeout
        while True:
            for s in self._poll(2.0, stop_at_leader=True):
                if s["role"] == "leader":
                    return s["replica"]
            if time.monotonic() > deadline:
                raise Unavailable(f"cluster {self.name!r} has no leader after {timeout} s")
            time.sleep(0.05)

    def _poll(self, timeout: float, stop_at_leader: bool = False, _rediscovering: bool = False) -> list[dict]:
        members = list(self._members)
        refs: dict[int, Any] = {}
        out: dict[int, dict] = {}
        for i in members:
            try:
                refs[i] = self._handle(i).status.remote()
            except ValueError:
                out[i] = _no_status(i, "down")
        index_of = {ref: i for i, ref in refs.items()}
        pending = list(refs.values())
        deadline = time.monotonic() + timeout
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            i = index_of[ready[0]]
            try:
                out[i] = ray.get(ready[0])
            except Exception:
                self._handles.pop(i, None)
                out[i] = _no_status(i, "down")
            if stop_at_leader and out[i]["role"] == "leader":
                break
        for ref in pending:
            # Busy (e.g. loading a large snapshot) or paused, not gone. Keep
            # the handle: for a job-scoped cluster it is what keeps the actor
            # alive, and dropping it would kill the replica.
            out[index_of[ref]] = _no_status(index_of[ref], "unresponsive")
        answers = [out[i] for i in members if i in out]
        newest = max((s for s in answers if s.get("voters") and s.get("conf_index") is not None
                      and not s.get("conf_pending")), key=lambda s: s["conf_index"], default=None)
        if newest is not None:
            self._set_members(newest, newest["conf_index"])
        elif answers and all(s["role"] == "down" for s in answers) and not _rediscovering:
            # Every member we knew is gone: replaced from elsewhere (a
            # supervisor, another handle)? Find the cluster by its actors' names.
            info = describe_cluster(self.name, self.namespace, timeout=min(timeout, 5.0))
            if info is not None and set(info["members"]) != set(members):
                self._set_members(info, info["conf_index"])
                return self._poll(timeout, stop_at_leader, _rediscovering=True)
        for s in answers:
            if s.get("node_id"):
                self._nodes.setdefault(s["replica"], s["node_id"])
        return answers

    # -- helpers -----------------------------------------------------------
    def _check_index(self, index: int) -> None:
        if not isinstance(index, int) or isinstance(index, bool) or index not in self._members:
            raise InvalidRequest(f"replica index must be one of the members {self._members}, got {index!r}")

    def _kill(self, index: int) -> None:
        try:
            handle = self._handles.pop(index, None) or ray.get_actor(actor_name(self.name, index),
                                                                     namespace=self.namespace)
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
        return f"Cluster(name={self.name!r}, members={self._members}, data_dir={self.data_dir!r})"


def start_cluster(name: str, replicas: int = 3, data_dir: str | None = None, *, detached: bool = False,
                  namespace: str = DEFAULT_NAMESPACE, options: NodeOptions | None = None,
                  wait_for_leader: bool = True, auto_replace: bool = False,
                  replace_after_s: float = 30.0) -> Cluster:
    """Start (or bring back from `data_dir`) a cluster of `replicas` Raft replicas.

    Args:
        name: cluster name; clients `connect(name)` with it.
        replicas: number of voting replicas of a new cluster (an odd number:
            3 or 5). A cluster started again from its data keeps the members
            its log records, whatever this says.
        data_dir: where replicas keep their logs (default: <tmp>/raftkv/<name>).
            Starting again with the same directory recovers the data.
        detached: keep the cluster running after this job ends.
        namespace: Ray namespace of the replica actors.
        options: replica timing (see NodeOptions).
        wait_for_leader: block until a leader is elected.
        auto_replace: replace a voter whose actor or Ray node is lost for
            longer than `replace_after_s` seconds with a fresh replica.
    Returns:
        A `Cluster` handle.
    Raises:
        ClusterExists: a cluster of this name is running in the namespace.
        StorageError: a replica could not open its log (e.g. corrupt data),
            or a member's data directory is gone.
        InvalidRequest: bad arguments.
    """
    _check_name(name)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or not 1 <= replicas <= 9:
        raise InvalidRequest(f"replicas must be an int in 1..9, got {replicas!r}")
    if not isinstance(auto_replace, bool):
        raise InvalidRequest(f"auto_replace must be a bool, got {auto_replace!r}")
    if not ray.is_initialized():
        ray.init(namespace=namespace, log_to_driver=True)
    if replica_indices(name, namespace):
        raise ClusterExists(f"cluster {name!r} is already running in namespace {namespace!r}; "
                            f"use client.connect({name!r}) or stop it first")
    try:  # a supervisor left from a detached run whose replicas are gone would heal the new one
        ray.kill(ray.get_actor(actor_name(name, SUPERVISOR), namespace=namespace), no_restart=True)
    except ValueError:
        pass
    data_dir = os.path.abspath(data_dir or default_data_dir(name))
    os.makedirs(data_dir, exist_ok=True)
    saved = saved_members(data_dir)
    if saved is not None:
        # A cluster that ran before: its members are what its log last recorded.
        voters, learners = sorted(saved["voters"]), sorted(saved["learners"])
        if len(voters) != replicas:
            log.info("cluster.members_from_data", cluster=name, voters=voters, learners=learners, asked=replicas)
        # A member that lost its data directory is not started (it must not
        # come back under its old identity); with a quorum of the others the
        # cluster serves, and it can be removed and replaced.
        cluster = Cluster(name, voters + learners, data_dir, namespace, detached, options or NodeOptions(), voters)
        failed = cluster._start(voters + learners, expect_data=True, tolerate=True)
        for i, why in failed.items():
            log.warning("cluster.member_not_started", cluster=name, replica=i, reason=why)
        damaged = {i: why for i, why in failed.items() if LOST_DATA not in why}
        if damaged:  # a damaged log is the operator's call, not something to start around
            for i in voters + learners:
                cluster._kill(i)
            i, why = next(iter(sorted(damaged.items())))
            raise StorageError(f"a replica of cluster {name!r} could not open its log: replica {i}: {why}")
        if len([v for v in voters if v not in failed]) < len(voters) // 2 + 1:
            for i in voters + learners:
                cluster._kill(i)
            raise StorageError(f"cluster {name!r}: too few voters could open their logs for a quorum: "
                               + "; ".join(f"replica {i}: {why}" for i, why in sorted(failed.items())))
    else:
        cluster = Cluster(name, list(range(replicas)), data_dir, namespace, detached, options or NodeOptions())
        cluster._start(list(range(replicas)))
    if wait_for_leader:
        cluster.leader(timeout=30.0)
    if auto_replace:
        cluster.enable_auto_replace(replace_after_s)
    log.info("cluster.started", cluster=name, members=cluster.indices, data_dir=data_dir)
    return cluster


def get_cluster(name: str, namespace: str = DEFAULT_NAMESPACE) -> Cluster:
    """A `Cluster` handle on a running cluster started elsewhere.

    Raises:
        ClusterNotFound: no replica of that name answers in the namespace.
    """
    _check_name(name)
    if not ray.is_initialized():
        ray.init(address="auto", namespace=namespace)
    info = describe_cluster(name, namespace)
    if info is None:
        raise ClusterNotFound(f"no cluster named {name!r} in Ray namespace {namespace!r}; start it with "
                              f"raft_actors.start_cluster({name!r}) or `raftkv start {name}`")
    cluster = Cluster(name, info["members"], info["data_dir"], namespace, info["detached"], info["options"],
                      info["voters"])
    cluster.status()  # learns where the replicas live
    return cluster
