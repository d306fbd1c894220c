"""Snapshots on a real local Ray instance: replicas compact their logs, restart
from snapshot plus tail, and a follower that fell behind catches up through
InstallSnapshot."""

from __future__ import annotations

import os

import pytest

from client import connect
from raft_actors.node import NodeOptions

from tests.helpers import wait_for

pytestmark = pytest.mark.ray

SMALL = NodeOptions(snapshot_entries=50)


def _snapfiles(data_dir: str, replica: int) -> list[str]:
    d = os.path.join(data_dir, f"replica-{replica}")
    return sorted(f for f in os.listdir(d) if f.endswith(".snap"))


def test_log_is_compacted_and_restart_loads_snapshot_plus_tail(make_cluster, tmp_path):
    data_dir = str(tmp_path / "snap")
    cluster = make_cluster(3, data_dir=data_dir, options=SMALL)
    with connect(cluster.name) as c:
        lease = c.lease(60)
        for i in range(300):
            c.put(f"k/{i:04d}", str(i), lease=lease if i % 10 == 0 else 0)
        c.delete("k/0001")
        assert wait_for(lambda: all(s["stats"]["snapshots"] >= 2 for s in cluster.status()), 30)
        for s in cluster.status():
            assert s["last_index"] - s["snapshot_index"] < 200  # the prefix is gone
            assert _snapfiles(data_dir, s["replica"])  # one snapshot file each
            assert len(_snapfiles(data_dir, s["replica"])) == 1
        rev = c.get("k/0299").mod_revision
        cluster.stop()
    cluster = make_cluster(3, name=cluster.name + "-again", data_dir=data_dir, options=SMALL)
    with connect(cluster.name) as c:
        kvs = c.get_prefix("k/")
        assert len(kvs) == 299 and c.get("k/0001") is None
        assert c.get("k/0299").mod_revision == rev
        assert c.get("k/0150", revision=rev - 5) is not None  # history survived too
        assert [s.id for s in c.leases()] == [lease.id]
        assert sorted(c.lease_time_to_live(lease.id, keys=True).keys)[:2] == [b"k/0000", b"k/0010"]


def test_lagging_follower_catches_up_by_install_snapshot(make_cluster):
    cluster = make_cluster(3, options=SMALL)
    with connect(cluster.name) as c:
        c.put("before", "1")
        follower = next(s["replica"] for s in cluster.status() if s["role"] == "follower")
        cluster.kill_replica(follower)
        for i in range(400):
            c.put(f"x/{i}", "v" * 100)
        leader = cluster.leader()
        assert wait_for(lambda: cluster.status()[leader]["snapshot_index"] > 100, 30)
        cluster.restart_replica(follower)
        target = cluster.status()[leader]["commit_index"]
        assert wait_for(lambda: (cluster.status()[follower]["applied_index"] or 0) >= target, 30)
        st = cluster.status()[follower]
        assert st["stats"]["snapshots_installed"] >= 1
        assert st["revision"] >= cluster.status()[leader]["revision"] - 5
        # the caught-up follower serves the data (serializable read goes to any replica)
        cluster.transfer_leadership(follower)
        assert len(c.get_prefix("x/")) == 400 and c.get("before").value == "1"


def test_backup_and_restore_into_a_new_cluster(make_cluster, tmp_path):
    from kv.errors import ClusterExists, CorruptLog, InvalidRequest
    from raft_actors import read_backup, restore_cluster

    cluster = make_cluster(3)
    path = str(tmp_path / "backup.rkv")
    with connect(cluster.name) as c:
        lease = c.lease(120)
        for i in range(50):
            c.put(f"b/{i:02d}", str(i), lease=lease if i < 5 else 0)
        c.delete("b/49")
        info = c.snapshot(path)
        c.put("b/after", "not in the backup")
        rev = c.get("b/48").mod_revision
    assert info.revision == rev + 2 and info.size > 0  # b/49 put, then deleted
    assert read_backup(path)[0] == info
    restored_dir = str(tmp_path / "restored")
    new = restore_cluster(path, cluster.name + "-r", 3, data_dir=restored_dir)
    try:
        with connect(new.name) as c:
            kvs = c.get_prefix("b/")
            assert len(kvs) == 49 and c.get("b/after") is None
            assert c.get("b/48").mod_revision == rev
            assert c.get_range("b/00").header.revision == info.revision
            assert c.lease_time_to_live(lease.id, keys=True).keys[:1] == (b"b/00",)
            r = c.put("b/new", "x")  # and it takes writes, revisions going on
            assert r.header.revision == info.revision + 1
        with pytest.raises(ClusterExists):
            restore_cluster(path, cluster.name + "-r2", 3, data_dir=restored_dir)
        # a replica added to an earlier cluster there (index past 0..2) counts too
        stale = tmp_path / "stale" / "replica-5"
        stale.mkdir(parents=True)
        (stale / "members.json").write_text('{"conf_index": 9, "voters": [0, 1, 5], "learners": []}')
        with pytest.raises(ClusterExists, match="replica-5"):
            restore_cluster(path, cluster.name + "-r3", 3, data_dir=str(tmp_path / "stale"))
    finally:
        new.stop()
    raw = bytearray(open(path, "rb").read())
    raw[-3] ^= 0xFF
    bad = tmp_path / "bad.rkv"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CorruptLog):
        restore_cluster(str(bad), cluster.name + "-bad", 3, data_dir=str(tmp_path / "bad"))
    with pytest.raises(InvalidRequest):
        restore_cluster(str(tmp_path / "missing.rkv"), cluster.name + "-m", 3, data_dir=str(tmp_path / "m"))
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_leader_compacts_history_automatically(make_cluster):
    from kv.errors import Compacted

    cluster = make_cluster(3, options=NodeOptions(keep_revisions=20))
    with connect(cluster.name) as c:
        for i in range(60):
            c.put("hot", str(i))

        def compacted():
            try:
                c.get("hot", revision=5)
            except Compacted as exc:
                return exc.compact_revision >= 5
            return False

        assert wait_for(compacted, 10)
        rev = c.get("hot").mod_revision
        assert c.get("hot", revision=rev - 15).value == str(60 - 16)  # recent history kept
        with pytest.raises(Compacted) as info:
            c.watch("hot", start_revision=2)
        assert "compacted" in str(info.value)
