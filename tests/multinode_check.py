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
    finally:
        ray.shutdown()
        rc.shutdown()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
