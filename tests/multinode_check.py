"""Placement on a multi-node Ray cluster (several Ray nodes on this machine).

Run in its own process (it starts its own Ray cluster with
`ray.cluster_utils.Cluster`): `python -m tests.multinode_check`. Exits 0 when
every check holds. tests/test_multinode.py runs it.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time

import structlog


def main() -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    import ray
    from ray.cluster_utils import Cluster as RayCluster

    from client import StorageError, connect
    from raft_actors import get_cluster, start_cluster

    failures = []

    def check(ok: bool, what: str) -> None:
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    rc = RayCluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [rc.add_node(num_cpus=1) for _ in range(2)]
    try:
        ray.init(address=rc.address, namespace="raftkv", log_to_driver=False)
        rc.wait_for_nodes()
        cluster = start_cluster("multinode", 3, data_dir=tempfile.mkdtemp())
        st = cluster.status()
        placed = {s["replica"]: s["node_id"] for s in st}
        check(len(set(placed.values())) == 3, f"three replicas on three Ray nodes: {sorted(set(placed.values()))}")
        c = connect("multinode", timeout=30)
        for i in range(50):
            c.put(f"k{i}", "v")
        cluster.restart_replica(1)
        check(cluster.status()[1]["node_id"] == placed[1], "a restarted replica comes back on the node with its data")
        check(get_cluster("multinode")._nodes == placed, "get_cluster learns where replicas live")
        victim = next(w for w in workers if w.node_id in placed.values())
        lost = next(i for i, n in placed.items() if n == victim.node_id)
        rc.remove_node(victim)
        t0 = time.monotonic()
        c.put("after", "node loss")
        check(len(c.get_prefix("k")) == 50, f"writes go on after losing a Ray node ({time.monotonic() - t0:.2f} s)")
        try:
            cluster.restart_replica(lost)
            check(False, "a replica whose node (and data) is gone is not restarted under its old identity")
        except StorageError:
            check(True, "a replica whose node (and data) is gone is not restarted under its old identity")
        c.close()
        cluster.stop()
        heal_check(rc, check)
    finally:
        ray.shutdown()
        rc.shutdown()
    return 1 if failures else 0


def heal_check(rc, check) -> None:
    """auto_replace: a Ray node holding a replica is removed under load; the
    cluster replaces that replica on another node and is back to three voters
    on three nodes, with every acknowledged write still there."""
    import threading

    from client import connect
    from raft_actors import start_cluster

    workers = [rc.add_node(num_cpus=1) for _ in range(3)]
    rc.wait_for_nodes()
    cluster = start_cluster("healing", 3, data_dir=tempfile.mkdtemp(), auto_replace=True, replace_after_s=3.0)
    placed = {s["replica"]: s["node_id"] for s in cluster.status()}
    c = connect("healing", timeout=60)
    acked: dict[str, str] = {}
    stop = threading.Event()

    def write(w: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                c.put(f"load/{w}/{i}", str(i))
                acked[f"load/{w}/{i}"] = str(i)
            except Exception:
                pass  # outcome unknown: not counted
            i += 1

    threads = [threading.Thread(target=write, args=(w,), daemon=True) for w in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    leader = cluster.leader()
    on_workers = {w.node_id: w for w in workers}
    # The leader's node if it is a worker (the harder case), else a follower's.
    lost = leader if placed[leader] in on_workers else next(i for i, n in placed.items() if n in on_workers)
    t0 = time.monotonic()
    rc.remove_node(on_workers[placed[lost]])
    deadline = time.monotonic() + 150
    healed = False
    while time.monotonic() < deadline:
        st = cluster.status(timeout=2.0)
        if (lost not in cluster.indices and len(cluster.voters) == 3
                and all(s["role"] in ("leader", "follower") for s in st)):
            healed = True
            break
        time.sleep(0.5)
    heal_s = time.monotonic() - t0
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(60)
    what = "the leader" if lost == leader else "a follower"
    check(healed, f"the cluster healed to three voters without replica {lost}, {what} ({heal_s:.1f} s after its node "
                  f"was removed; members {cluster.indices})")
    nodes = {s["replica"]: s["node_id"] for s in cluster.status()}
    check(len(set(nodes.values())) == 3 and placed[lost] not in nodes.values(),
          f"the replacement runs on another live node: {nodes}")
    got = {kv.key: kv.value for kv in c.get_prefix("load/")}
    missing = [k for k, v in acked.items() if got.get(k) != v]
    check(len(acked) > 50 and not missing,
          f"all {len(acked)} acknowledged writes are there after healing ({len(missing)} missing)")
    c.close()
    cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
