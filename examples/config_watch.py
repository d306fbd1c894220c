"""A service reacts to configuration changes through a watch.

A Ray actor loads everything under "config/" once, then watches the prefix
from the next revision, so it misses no change and sees none twice. The
driver sets, changes and deletes settings; the service's view follows.

Run: `python -m examples.config_watch`. Exit code 1 if a check fails.
"""

from __future__ import annotations

import sys
import threading
import time

import ray

from client import Put, connect, prefix_end
from examples._common import report, start_demo_cluster

PREFIX = "config/"


@ray.remote(num_cpus=0)
class Service:
    def __init__(self, cluster: str) -> None:
        self.c = connect(cluster)
        r = self.c.get_range(PREFIX, prefix_end(PREFIX))
        self.config = {kv.key: kv.value for kv in r.kvs}
        self.revision = r.header.revision
        self.changes = 0
        self.watch = self.c.watch(PREFIX, start_revision=r.header.revision + 1, prefix=True)
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        for ev in self.watch:
            if ev.type == "put":
                self.config[ev.key] = ev.value
            else:
                self.config.pop(ev.key, None)
            self.revision = ev.mod_revision
            self.changes += 1

    def view(self) -> tuple[dict, int, int]:
        return dict(self.config), self.revision, self.changes


def main() -> int:
    cluster = start_demo_cluster("config")
    failures = []
    try:
        with connect(cluster.name) as c:
            c.put("config/log_level", "info")
            service = Service.remote(cluster.name)
            ray.get(service.view.remote())  # started
            c.put("config/log_level", "debug")
            c.put("config/workers", "8")
            c.put("config/feature_x", "on")
            c.delete("config/feature_x")
            c.txn(success=[Put("config/workers", "16"), Put("config/region", "eu")])  # one revision
            expected = {"config/log_level": "debug", "config/workers": "16", "config/region": "eu"}
            want_rev = c.get("config/region").mod_revision
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                view, rev, changes = ray.get(service.view.remote())
                if rev >= want_rev:
                    break
                time.sleep(0.05)
            print(f"service view at revision {rev} after {changes} events: {view}")
            if view != expected:
                failures.append(f"service view {view} != {expected}")
            if changes != 6:
                failures.append(f"expected 6 events (3 puts, 1 delete, 2 puts in one txn), got {changes}")
            ray.kill(service)
    finally:
        cluster.stop()
    return report("config_watch", failures)


if __name__ == "__main__":
    sys.exit(main())
