"""The replicated key-value cluster on a real local Ray instance.

One Ray instance serves the whole session (tests/conftest.py); each test makes
its own small cluster under a unique name.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
import ray

from client import (
    ClientClosed,
    ClusterNotFound,
    Compacted,
    Compare,
    DeleteRange,
    InvalidRequest,
    Put,
    Range,
    RequestTooLarge,
    connect,
)
from kv import Command
from kv.errors import StorageError
from raft_actors import ClusterExists, start_cluster

from tests.helpers import wait_for

pytestmark = pytest.mark.ray


# -- the key-value API -------------------------------------------------------

def test_put_get_types_and_revisions(c):
    r1 = c.put("a", "1")
    r2 = c.put(b"b", b"\x00\xff")
    assert r2.header.revision == r1.header.revision + 1
    assert r1.header.raft_term >= 1
    kv = c.get("a")
    assert (kv.key, kv.value, kv.version) == ("a", "1", 1)
    assert kv.create_revision == kv.mod_revision == r1.header.revision
    assert kv.lease == 0
    kb = c.get(b"b")
    assert kb.key == b"b" and kb.value == b"\x00\xff"
    c.put("a", "2")
    kv2 = c.get("a")
    assert kv2.version == 2 and kv2.create_revision == kv.create_revision and kv2.mod_revision > kv.mod_revision
    assert c.get("missing") is None
    # reads at an older revision see the old value
    assert c.get("a", revision=r1.header.revision).value == "1"


def test_prefix_range_sort_limit_and_serializable(c):
    for i in range(10):
        c.put(f"p/{i}", f"v{i}")
    c.put("q/0", "other")
    kvs = c.get_prefix("p/")
    assert [kv.key for kv in kvs] == [f"p/{i}" for i in range(10)]
    assert [kv.key for kv in c.get_prefix("p/", limit=3)] == ["p/0", "p/1", "p/2"]
    desc = c.get_prefix("p/", sort_order="descend")
    assert desc[0].key == "p/9"
    resp = c.get_range("p/2", "p/5")
    assert [kv.key for kv in resp.kvs] == ["p/2", "p/3", "p/4"] and resp.count == 3
    counted = c.get_range("p/", "p0", count_only=True)
    assert counted.count == 10 and not counted.kvs
    keys_only = c.get_prefix("p/", keys_only=True)
    assert all(not kv.value for kv in keys_only)
    # serializable reads converge on every replica
    assert wait_for(lambda: len(c.get_prefix("p/", serializable=True)) == 10)


def test_delete_replace_and_txn(c):
    c.put("d/1", "x")
    c.put("d/2", "y")
    c.put("d3", "z")
    assert c.delete("d/1") == 1
    assert c.delete("d/1") == 0
    assert c.delete("d/", prefix=True) == 1
    assert c.get("d3").value == "z"
    c.put("cas", "old")
    assert c.replace("cas", "old", "new") is True
    assert c.replace("cas", "old", "newer") is False
    assert c.get("cas").value == "new"
    resp = c.txn(compare=[c.value("cas") == "new", c.version("cas") > 0],
                 success=[Put("t1", "yes"), Range("cas")],
                 failure=[Put("t1", "no")])
    assert resp.succeeded and c.get("t1").value == "yes"
    assert resp.responses[1].kvs[0].value == "new"
    resp = c.txn(compare=[Compare("cas", "mod", "<", 1)], success=[Put("t2", "a")],
                 failure=[DeleteRange("t1")])
    assert not resp.succeeded and c.get("t1") is None and c.get("t2") is None


def test_async_api_batches_concurrent_requests(cluster, c):
    async def main():
        await asyncio.gather(*(c.aput(f"as/{i}", str(i)) for i in range(500)))
        got = await asyncio.gather(*(c.aget(f"as/{i}") for i in range(500)))
        return got

    got = asyncio.run(main())
    assert [g.value for g in got] == [str(i) for i in range(500)]
    leader = cluster.status()[cluster.leader()]
    # 500 writes went in far fewer proposals than writes: the client batched them
    assert leader["stats"]["proposals"] < 250


def test_client_works_from_ray_tasks_and_actors(cluster, c):
    name = cluster.name

    @ray.remote
    def task_writer(i):
        from client import connect as conn

        cl = conn(name)
        cl.put(f"task/{i}", f"from-task-{i}")
        v = cl.get(f"task/{i}").value
        cl.close()
        return v

    @ray.remote
    class Writer:
        def write(self):
            from client import connect as conn

            cl = conn(name)
            cl.put("actor/key", "from-actor")
            cl.close()
            return True

    assert ray.get([task_writer.remote(i) for i in range(3)]) == [f"from-task-{i}" for i in range(3)]
    w = Writer.remote()
    assert ray.get(w.write.remote())
    assert c.get("actor/key").value == "from-actor"
    ray.kill(w)


# -- errors ------------------------------------------------------------------

def test_bad_input_gets_typed_errors_and_stores_nothing(c):
    before = c.put("canary", "ok").header.revision
    with pytest.raises(InvalidRequest):
        c.put(1, "x")
    with pytest.raises(InvalidRequest):
        c.put("k", 3.5)
    with pytest.raises(InvalidRequest):
        c.put("", "empty key")
    with pytest.raises(RequestTooLarge):
        c.put("big", b"x" * (2 * 1024 * 1024))
    with pytest.raises(RequestTooLarge):
        c.txn(success=[Put(f"many/{i}", "v") for i in range(200)])
    with pytest.raises(InvalidRequest):
        c.get_prefix("p/", sort_order="sideways")
    with pytest.raises(InvalidRequest):
        c.get("k", serializable="yes")
    from kv.errors import LeaseNotFound

    with pytest.raises(LeaseNotFound):
        c.put("k", "v", lease=42)
    assert c.put("canary", "ok2").header.revision == before + 1


def test_compacted_revision_read_fails_clearly(c):
    r1 = c.put("comp", "1").header.revision
    r2 = c.put("comp", "2").header.revision
    c.compact(r2)
    with pytest.raises(Compacted) as info:
        c.get("comp", revision=r1)
    assert info.value.compact_revision == r2
    assert c.get("comp").value == "2"


def test_closed_client_and_unknown_cluster(cluster):
    cl = connect(cluster.name)
    cl.put("x", "y")
    cl.close()
    cl.close()  # idempotent
    with pytest.raises(ClientClosed):
        cl.put("x", "z")
    with pytest.raises(ClientClosed):
        cl.get("x")
    with pytest.raises(ClusterNotFound):
        connect("no-such-cluster-anywhere")


def test_cluster_lifecycle_errors(cluster, tmp_path):
    with pytest.raises(ClusterExists):
        start_cluster(cluster.name, 3, data_dir=str(tmp_path))
    with pytest.raises(InvalidRequest):
        cluster.kill_replica(7)
    with pytest.raises(InvalidRequest):
        start_cluster("bad/name")
    with pytest.raises(InvalidRequest):
        start_cluster("zero", replicas=0)


def test_corrupt_data_dir_is_refused_and_left_alone(make_cluster, tmp_path):
    data = tmp_path / "data"
    cl = make_cluster(3, data_dir=str(data))
    c = connect(cl.name)
    for i in range(20):
        c.put(f"k{i}", "v" * 50)
    c.close()
    cl.stop()
    seg_dir = data / "replica-0" / "wal"
    seg = sorted(seg_dir.iterdir())[0]
    raw = bytearray(seg.read_bytes())
    raw[60] ^= 0xFF  # inside an early record, not the tail
    seg.write_bytes(bytes(raw))
    with pytest.raises(StorageError) as info:
        start_cluster(cl.name, 3, data_dir=str(data))
    assert "replica" in str(info.value)
    assert seg.read_bytes() == bytes(raw)  # nothing rewritten


# -- replication, fail-over and recovery --------------------------------------

def test_status_reports_one_leader(cluster):
    # right after start a follower may not have heard from the new leader yet
    assert wait_for(lambda: len({s["leader"] for s in cluster.status()}) == 1)
    st = cluster.status()
    assert len(st) == 3
    leaders = [s for s in st if s["role"] == "leader"]
    assert len(leaders) == 1
    for s in st:
        assert {"role", "term", "commit_index", "applied_index", "leader"} <= set(s)
        assert s["leader"] == leaders[0]["replica"]


def test_leader_kill_under_load_loses_no_acknowledged_write(cluster, c):
    acked: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[Exception] = []

    def writer(w):
        i = 0
        while not stop.is_set():
            key, val = f"load/{w}/{i}", f"{w}-{i}"
            try:
                c.put(key, val)
            except Exception as exc:  # an unknown outcome is allowed, not a lost ack
                errors.append(exc)
                continue
            with lock:
                acked[key] = val
            i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    old = cluster.leader()
    cluster.kill_replica(old)
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) > 50
    new = cluster.leader()
    assert new != old
    got = {kv.key: kv.value for kv in c.get_prefix("load/")}
    missing = [k for k, v in acked.items() if got.get(k) != v]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
    cluster.restart_replica(old)
    commit = cluster.status()[new]["commit_index"]
    assert wait_for(lambda: (cluster.status()[old]["applied_index"] or 0) >= commit, 30)


def test_restarted_replica_recovers_from_its_data_dir(cluster, c):
    for i in range(30):
        c.put(f"r/{i}", str(i))
    follower = next(s["replica"] for s in cluster.status() if s["role"] == "follower")
    cluster.kill_replica(follower)
    for i in range(30, 40):
        c.put(f"r/{i}", str(i))
    cluster.restart_replica(follower)
    h = cluster.handle(follower)
    target = c.put("r/final", "x").header.revision

    def caught_up():
        st = ray.get(h.status.remote())
        return st["revision"] >= target

    assert wait_for(caught_up, 30)
    status, res = ray.get(h.query.remote([Range("r/", "r0")], False))
    assert status == "ok" and res[0].count == 41


def test_whole_cluster_restart_brings_back_every_write(make_cluster, tmp_path):
    data = str(tmp_path / "whole")
    cl = make_cluster(3, data_dir=data)
    c = connect(cl.name)
    for i in range(100):
        c.put(f"w/{i}", f"v{i}")
    rev = c.get("w/99").mod_revision
    c.close()
    cl.stop()
    cl2 = start_cluster(cl.name, 3, data_dir=data)
    try:
        c2 = connect(cl.name)
        kvs = c2.get_prefix("w/")
        assert len(kvs) == 100 and all(kv.value == f"v{kv.key[2:]}" for kv in kvs)
        assert c2.put("w/after", "x").header.revision == rev + 1
        c2.close()
    finally:
        cl2.stop()


def test_partitioned_old_leader_cannot_read_or_commit(cluster, c):
    c.put("part", "before")
    old = cluster.leader()
    others = [i for i in range(3) if i != old]
    cluster.partition([[old], others])
    h_old = cluster.handle(old)
    # a write at the isolated leader never commits
    cmd = Command("", 0, 0, Put("part", "stale-write"))
    status, _ = ray.get(h_old.submit.remote([cmd]))
    assert status in ("timeout", "not_leader")
    # the majority elects a leader and moves on
    assert wait_for(lambda: any(s["role"] == "leader" and s["replica"] in others for s in cluster.status()), 20)
    c.put("part", "after")
    # the old leader serves no linearizable read (it would be stale)
    status, payload = ray.get(h_old.query.remote([Range("part")], True))
    assert status in ("timeout", "not_leader"), payload
    cluster.heal()
    assert c.get("part").value == "after"
    assert wait_for(lambda: cluster.status()[old]["role"] == "follower", 20)


def test_retried_write_is_applied_exactly_once(cluster, c):
    leader = cluster.handle(cluster.leader())
    cid = "retry-client"
    cmd = Command(cid, 1, 1, Put("once", "v"))
    s1, r1 = ray.get(leader.submit.remote([cmd]))
    s2, r2 = ray.get(leader.submit.remote([cmd]))  # the same request id again
    assert s1 == s2 == "ok"
    assert r1[0].header.revision == r2[0].header.revision
    assert c.get("once").version == 1
    # a different seq is a new write
    s3, r3 = ray.get(leader.submit.remote([Command(cid, 2, 2, Put("once", "v"))]))
    assert s3 == "ok" and c.get("once").version == 2


def test_client_recovers_when_the_cluster_forgot_its_session(cluster, c):
    c.put("sess", "1")
    leader = cluster.handle(cluster.leader())
    # What an idle-expired session looks like to the state machine: an unknown
    # client id that says it already has results (ack > 1).
    status, res = ray.get(leader.submit.remote([Command("forgotten-client", 7, 7, Put("sess", "x"))]))
    from kv.errors import SessionExpired

    assert status == "ok" and isinstance(res[0], SessionExpired)
    assert c.get("sess").value == "1"  # not applied
    c.client_id = "forgotten-client"  # make our client that forgotten session
    c._seq = iter(range(7, 10**9))
    c._outstanding = set()
    c.put("sess", "2")  # gets SessionExpired, starts a new session, resends
    assert c.get("sess").value == "2" and c.client_id != "forgotten-client"


def test_one_way_partition_of_the_leader_moves_leadership(cluster, c):
    c.put("oneway", "before")
    old = cluster.leader()
    for i in range(3):
        if i != old:
            cluster.block(old, i)  # the old leader still hears its followers
    assert wait_for(lambda: any(s["role"] == "leader" and s["replica"] != old for s in cluster.status()), 20)
    c.put("oneway", "after")
    assert wait_for(lambda: cluster.status()[old]["role"] != "leader", 20)
    cluster.heal()
    assert c.get("oneway").value == "after"
    with pytest.raises(InvalidRequest):
        cluster.block(0, 0)


def test_operator_moves_leadership_gracefully(cluster, c):
    c.put("transfer", "1")
    old = cluster.leader()
    target = (old + 1) % 3
    term = cluster.status()[old]["term"]
    cluster.transfer_leadership(target)
    st = cluster.status()
    assert st[target]["role"] == "leader" and st[target]["term"] == term + 1
    c.put("transfer", "2")  # the client follows the new leader
    assert c.get("transfer").value == "2"


def test_paused_leader_is_routed_around(cluster, c):
    import signal

    c.put("pause", "before")
    old = cluster.leader()
    pid = ray.get(cluster.handle(old).__ray_call__.remote(lambda self: os.getpid()))
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        c.put("pause", "during")  # the client gives up on the frozen leader and finds the new one
        assert time.monotonic() - t0 < 10
        assert c.get("pause").value == "during"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wait_for(lambda: cluster.status()[old]["role"] == "follower", 20)
    assert c.get("pause", serializable=True) is not None
