"""Membership changes on a real local Ray instance: add, promote, remove,
leader hand-over, refusals, ids never reused, restart from data, self-healing."""

from __future__ import annotations

import os
import threading
import time

import pytest
import ray

from client import connect
from kv.errors import InvalidRequest, StorageError
from raft_actors import ConfChangeRefused, NodeOptions, get_cluster, start_cluster
from raft_actors.membership import Refusal
from tests.helpers import wait_for

pytestmark = pytest.mark.ray


class Writers:
    """Background writers that remember every acknowledged write."""

    def __init__(self, client, n: int = 4, prefix: str = "load/") -> None:
        self.client, self.prefix = client, prefix
        self.acked: dict[str, str] = {}
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(n)]
        for t in self._threads:
            t.start()

    def _run(self, w: int) -> None:
        i = 0
        while not self._stop.is_set():
            key, value = f"{self.prefix}{w}/{i}", f"v{i}"
            try:
                self.client.put(key, value)
            except Exception as exc:  # outcome unknown: not counted as acknowledged
                self.errors.append(exc)
            else:
                self.acked[key] = value
            i += 1

    def stop(self) -> dict[str, str]:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        return self.acked

    def check_all_present(self) -> None:
        got = {kv.key: kv.value for kv in self.client.get_prefix(self.prefix)}
        missing = [k for k, v in self.acked.items() if got.get(k) != v]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"


def _roles(cluster) -> dict[int, str]:
    return {s["replica"]: s["role"] for s in cluster.status()}


def test_add_and_remove_under_load_loses_nothing(cluster, c):
    load = Writers(c)
    time.sleep(0.5)
    new = cluster.add_replica(timeout=60)
    assert new == 3
    assert cluster.voters == [0, 1, 2, 3]
    members = {m["replica"]: m for m in cluster.members()}
    assert set(members) == {0, 1, 2, 3} and all(m["voter"] for m in members.values())
    cluster.remove_replica(0)
    assert cluster.indices == [1, 2, 3]
    time.sleep(0.5)
    acked = load.stop()
    assert len(acked) > 50
    load.check_all_present()
    # The new member holds the same state as the others.
    st = {s["replica"]: s for s in cluster.status()}
    assert wait_for(lambda: len({s["revision"] for s in cluster.status()}) == 1, 10), st
    # The removed replica is gone and cannot be restarted under its identity.
    with pytest.raises(InvalidRequest):
        cluster.restart_replica(0)
    retired = [n for n in os.listdir(cluster.data_dir) if n.startswith("replica-0.removed-")]
    assert retired, os.listdir(cluster.data_dir)


def test_removing_the_leader_hands_leadership_over_first(cluster, c):
    c.put("before", "1")
    leader = cluster.leader()
    cluster.remove_replica(leader)
    assert leader not in cluster.indices and len(cluster.voters) == 2
    new_leader = cluster.leader()
    assert new_leader != leader
    assert any(n.startswith(f"replica-{leader}.removed-") for n in os.listdir(cluster.data_dir))
    c.put("after", "2")
    assert c.get("before").value == "1" and c.get("after").value == "2"


def test_a_change_that_would_lose_quorum_is_refused(cluster, c):
    c.put("k", "v")
    leader = cluster.leader()
    down = next(i for i in cluster.indices if i != leader)
    live = next(i for i in cluster.indices if i not in (leader, down))
    cluster.kill_replica(down)
    time.sleep(1.0)  # the leader notices the dead replica (it stops answering)
    with pytest.raises(ConfChangeRefused) as info:
        cluster.remove_replica(live)
    assert info.value.reason == Refusal.WOULD_LOSE_QUORUM
    assert cluster.voters == [0, 1, 2]
    cluster.remove_replica(down)  # removing the dead one leaves two live voters: fine
    assert sorted(cluster.voters) == sorted([leader, live])
    c.put("k2", "v2")
    follower = next(i for i in cluster.voters if i != cluster.leader())
    cluster.remove_replica(follower)  # two live voters to one: allowed
    c.put("k3", "v3")
    with pytest.raises(ConfChangeRefused) as info:
        cluster.remove_replica(cluster.voters[0])
    assert info.value.reason == Refusal.LAST_VOTER
    assert c.get("k").value == "v" and c.get("k3").value == "v3"


def test_indices_are_never_reused_and_lost_data_never_returns(make_cluster):
    cluster = make_cluster(3)
    first = cluster.add_replica(timeout=60)
    cluster.remove_replica(first)
    second = cluster.add_replica(timeout=60)
    assert second > first
    # Asking the leader directly to add an old index is refused.
    leader = cluster.handle(cluster.leader())
    status, payload = ray.get(leader.change_membership.remote("add_learner", first))
    assert status == "refused" and payload[0] == Refusal.ID_USED.value
    # A member whose data directory is deleted is not restarted under its identity.
    cluster.kill_replica(second)
    import shutil

    shutil.rmtree(os.path.join(cluster.data_dir, f"replica-{second}"))
    with pytest.raises(StorageError, match="cannot come back under its old identity"):
        cluster.restart_replica(second)


def test_restart_from_data_keeps_the_changed_membership(make_cluster, tmp_path):
    cluster = make_cluster(3, data_dir=str(tmp_path))
    c = connect(cluster.name, timeout=20)
    c.put("a", "1")
    new = cluster.add_replica(timeout=60)
    cluster.remove_replica(1)
    c.put("b", "2")
    c.close()
    cluster.stop()
    again = start_cluster(cluster.name, 3, data_dir=str(tmp_path))
    try:
        assert again.indices == sorted([0, 2, new])
        c = connect(again.name, timeout=20)
        assert c.get("a").value == "1" and c.get("b").value == "2"
        c.put("c", "3")
        c.close()
        assert get_cluster(again.name).indices == sorted([0, 2, new])
    finally:
        again.stop()


def test_client_follows_members_when_all_original_replicas_are_replaced(cluster, c):
    c.put("x", "1")
    for old in (0, 1, 2):
        cluster.add_replica(timeout=60)
        cluster.remove_replica(old)
    assert cluster.indices == [3, 4, 5]
    assert c.get("x").value == "1"  # the long-lived client found the new members
    c.put("y", "2")
    fresh = connect(cluster.name, timeout=20)
    try:
        assert fresh.get("y").value == "2"
    finally:
        fresh.close()


def test_new_member_catches_up_through_install_snapshot(make_cluster):
    cluster = make_cluster(3, options=NodeOptions(snapshot_entries=200))
    c = connect(cluster.name, timeout=20)
    for i in range(30):
        c.txn().then(*[_put(f"s/{i}/{j}", "x" * 50) for j in range(20)]).commit()
    for i in range(300):
        c.put(f"t/{i}", "y")
    assert wait_for(lambda: all((s.get("snapshot_index") or 0) > 0 for s in cluster.status()), 20)
    new = cluster.add_replica(timeout=60)
    st = {s["replica"]: s for s in cluster.status()}
    assert st[new]["stats"]["snapshots_installed"] >= 1, st[new]["stats"]
    assert wait_for(lambda: {s["replica"]: s for s in cluster.status()}[new]["revision"]
                    == {s["replica"]: s for s in cluster.status()}[cluster.leader()]["revision"], 10)
    c.close()


def _put(key: str, value: str):
    from kv import Put

    return Put(key.encode(), value.encode())


def test_auto_replace_heals_a_lost_replica(make_cluster):
    cluster = make_cluster(3, auto_replace=True, replace_after_s=2.0)
    c = connect(cluster.name, timeout=30)
    load = Writers(c, n=2)
    time.sleep(0.5)
    cluster.kill_replica(1)
    assert wait_for(lambda: 1 not in cluster.indices and len(cluster.voters) == 3, 60), cluster.indices
    roles = _roles(cluster)
    assert sorted(roles.values()).count("leader") == 1 and "down" not in roles.values(), roles
    time.sleep(0.5)
    load.stop()
    load.check_all_present()
    assert len(load.acked) > 20
    c.close()


def test_bad_membership_arguments_are_typed_errors(cluster):
    with pytest.raises(InvalidRequest):
        cluster.remove_replica(7)
    with pytest.raises(InvalidRequest):
        cluster.remove_replica("0")
    with pytest.raises(InvalidRequest):
        cluster.enable_auto_replace(-1)
    status, payload = ray.get(cluster.handle(cluster.leader()).change_membership.remote("bogus", 1))
    assert status == "refused" and payload[0] == "invalid"


def test_restart_without_a_members_data_serves_and_lets_it_be_replaced(make_cluster, tmp_path):
    import shutil

    cluster = make_cluster(3, data_dir=str(tmp_path))
    c = connect(cluster.name, timeout=20)
    c.put("a", "1")
    c.close()
    cluster.stop()
    shutil.rmtree(tmp_path / "replica-2")  # lost with its disk
    again = start_cluster(cluster.name, 3, data_dir=str(tmp_path))
    try:
        assert {s["replica"]: s["role"] for s in again.status()}[2] == "down"  # not started empty
        c = connect(again.name, timeout=20)
        assert c.get("a").value == "1"
        again.remove_replica(2)
        new = again.add_replica(timeout=60)
        assert again.voters == [0, 1, new] and new == 3
        c.put("b", "2")
        c.close()
    finally:
        again.stop()


def test_detached_cluster_heals_through_its_supervisor_actor(make_cluster):
    cluster = make_cluster(3, detached=True)
    cluster.enable_auto_replace(2.0)
    sup = ray.get_actor(f"raftkv/{cluster.name}/supervisor", namespace=cluster.namespace)
    c = connect(cluster.name, timeout=30)
    c.put("k", "v")
    cluster.kill_replica(0)
    assert wait_for(lambda: ray.get(sup.replaced.remote()), 60)
    assert wait_for(lambda: cluster.status() and 0 not in cluster.indices and len(cluster.voters) == 3, 30)
    assert c.get("k").value == "v"
    c.close()
    cluster.stop()  # stops the supervisor too, and the replica it added
    with pytest.raises(ValueError):
        ray.get_actor(f"raftkv/{cluster.name}/supervisor", namespace=cluster.namespace)
    assert not [i for i in range(6) if _named(cluster, i)]


def _named(cluster, i: int) -> bool:
    try:
        ray.get_actor(f"raftkv/{cluster.name}/{i}", namespace=cluster.namespace)
    except ValueError:
        return False
    return True


def test_a_change_resent_while_its_first_attempt_commits_counts_as_done(cluster):
    # What a retry after a timeout or a leader change looks like: the same
    # change arrives while the first attempt is still uncommitted (the
    # leader's messages are held back meanwhile), then after it committed.
    cluster._start([3], join=True)
    leader = cluster.leader()
    followers = [i for i in cluster.indices if i != leader]
    for f in followers:
        cluster.block(leader, f)
    first = cluster.handle(leader).change_membership.remote("add_learner", 3)
    threading.Timer(0.25, cluster.heal).start()  # before the followers give up on the leader
    cluster._change("add_learner", 3, time.monotonic() + 20)  # must not raise id_used / already_member
    # (if the heal came late, the followers elected a new leader and the first attempt lost its leader)
    assert ray.get(first, timeout=20)[0] in ("ok", "timeout", "not_leader")
    assert 3 in cluster.indices and 3 not in cluster.voters
    cluster._change("promote", 3, time.monotonic() + 30, wait_caught_up=True)
    cluster._change("promote", 3, time.monotonic() + 30, wait_caught_up=True)  # again: already a voter
    assert 3 in cluster.voters


def test_auto_replace_treats_a_frozen_replica_as_lost(make_cluster):
    import signal

    cluster = make_cluster(3, auto_replace=True, replace_after_s=2.0)
    c = connect(cluster.name, timeout=30)
    c.put("k", "v")
    frozen = next(i for i in cluster.indices if i != cluster.leader())
    pid = ray.get(cluster.handle(frozen).__ray_call__.remote(lambda self: os.getpid()))
    os.kill(pid, signal.SIGSTOP)  # alive to Ray, silent to everyone
    try:
        assert wait_for(lambda: frozen not in cluster.indices and len(cluster.voters) == 3, 60), cluster.indices
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass  # killed by the removal
    c.put("k2", "v2")
    assert c.get("k").value == "v" and c.get("k2").value == "v2"
    assert wait_for(lambda: all(s["role"] in ("leader", "follower") for s in cluster.status()), 20)
    c.close()
