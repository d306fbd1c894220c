"""`raftkv`: the command line, in the spirit of etcdctl.

    raftkv demo                              the quickstart tour (own Ray instance)
    raftkv bench [--json] [--seconds N] ...  end-to-end figures (own Ray instance)
    raftkv bench-core                        Raft core, simulator and WAL figures (no Ray)
    raftkv chaos [--duration 60] [--seed N] [--json]   faults + linearizability check (own Ray instance)
    raftkv start NAME [--replicas 3] [--data-dir D]   a detached cluster on a running Ray cluster
    raftkv stop NAME
    raftkv put KEY VALUE
    raftkv get KEY [--prefix] [--serializable] [--rev N] [--keys-only] [--json]
    raftkv del KEY [--prefix]
    raftkv status

Commands that talk to a cluster attach to a running Ray cluster (`ray start
--head` first; `--address`, default "auto") unless Ray is already initialized
in this process, and take `--name` (default "default") and `--namespace`
(default "raftkv").

Exit codes: 0 on success; 1 on a raftkv error (printed as `Error: ...` on
stderr) or when no Ray cluster is running; 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from typing import Any, Sequence

import structlog

from kv.errors import InvalidRequest, RaftKVError

DEFAULT_NAME = "default"
DEFAULT_ADDRESS = "auto"
DEFAULT_NAMESPACE = "raftkv"


class NoRayCluster(RaftKVError):
    """No Ray cluster answers at the given address."""


# -- output helpers -------------------------------------------------------------
def show(value: Any) -> str:
    """A key or value as printed: str as is, utf-8 bytes decoded, other bytes as a repr."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return repr(bytes(value))
    return repr(value)


def _kv_json(kv: Any, keys_only: bool) -> dict:
    d = {"key": show(kv.key), "create_revision": kv.create_revision, "mod_revision": kv.mod_revision,
         "version": kv.version, "lease": kv.lease}
    if not keys_only:
        d["value"] = show(kv.value)
    return d


def format_status(statuses: list[dict]) -> str:
    """The `status` table: replica, role, term, leader, commit, applied."""
    header = ("replica", "role", "term", "leader", "commit", "applied")
    rows = [header]
    for s in statuses:
        rows.append(tuple("-" if v is None else str(v) for v in (
            s.get("replica"), s.get("role", "down"), s.get("term"), s.get("leader"),
            s.get("commit_index"), s.get("applied_index"))))
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


# -- attaching to Ray -----------------------------------------------------------
def _attach(address: str, namespace: str) -> bool:
    """Connect this process to a running Ray cluster; True if we did (so we shut it down).

    Raises:
        NoRayCluster: nothing answers at `address` (checked first, because
            ray.init would otherwise retry for a minute or more).
    """
    import ray

    if ray.is_initialized():
        return False
    where = address
    if address.startswith("ray://"):  # Ray Client: let ray.init report what is wrong
        ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.ERROR)
        return True
    try:
        from ray._private.services import canonicalize_bootstrap_address

        resolved = canonicalize_bootstrap_address(address)
        if resolved is None:
            raise ConnectionError("no address")
        where = resolved
        host, _, port = resolved.rpartition(":")
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2.0):
            pass
    except (ConnectionError, OSError, ValueError) as exc:
        raise NoRayCluster(f"no running Ray cluster at {where!r} ({exc}); start one with `ray start --head` "
                           f"or use `raftkv demo`") from exc
    try:
        ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as exc:
        hint = ""
        if isinstance(exc, ConnectionError) and address != DEFAULT_ADDRESS:
            # Reachable but refused: Ray enables token authentication only for "auto".
            hint = ("; if the cluster uses token authentication (Ray's default), set RAY_AUTH_MODE=token "
                    "or use --address auto")
        raise NoRayCluster(f"could not connect to the Ray cluster at {where!r} ({exc}){hint}") from exc
    return True


def _arg(text: str) -> str | bytes:
    """A KEY or VALUE from the command line: str, or bytes if it holds bytes that are not utf-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable argv bytes arrive as surrogate escapes
        return os.fsencode(text)
    return text


# -- commands -----------------------------------------------------------------------
def _cmd_demo(args: argparse.Namespace) -> int:
    from examples.quickstart import main as demo

    demo()
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from client.bench import run_from_args

    run_from_args(args)
    return 0


def _cmd_bench_core(args: argparse.Namespace) -> int:
    from client.bench_core import main as bench_core

    bench_core()
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    from raft_actors import start_cluster

    cluster = start_cluster(args.cluster, args.replicas, data_dir=args.data_dir, detached=True,
                            namespace=args.namespace, auto_replace=args.auto_replace,
                            replace_after_s=args.replace_after)
    healing = f", replacing a replica lost for {args.replace_after:g} s" if args.auto_replace else ""
    print(f"started cluster {args.cluster!r} (members {cluster.indices}, data in {cluster.data_dir}, "
          f"Ray namespace {args.namespace!r}{healing})")
    print(format_status(cluster.status()))
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    from raft_actors import get_cluster

    get_cluster(args.cluster, namespace=args.namespace).stop()
    print(f"stopped cluster {args.cluster!r}")
    return 0


def _cmd_members(args: argparse.Namespace) -> int:
    from raft_actors import get_cluster

    cluster = get_cluster(args.cluster, namespace=args.namespace)
    if args.action == "add":
        index = cluster.add_replica(timeout=args.timeout)
        print(f"added replica {index} (caught up and promoted to voter)")
    elif args.action == "remove":
        if args.index is None:
            raise InvalidRequest("`raftkv members remove NAME INDEX` needs the replica index to remove")
        cluster.remove_replica(args.index, timeout=args.timeout)
        print(f"removed replica {args.index}")
    for m in cluster.members():
        kind = "voter" if m["voter"] else "learner"
        print(f"{m['replica']:>4}  {kind:<8} {m['role']:<12} node {m['node_id'] or '-'}")
    return 0


def _cmd_snapshot(args: argparse.Namespace) -> int:
    with _client(args) as c:
        info = c.snapshot(args.path)
    print(f"saved {info.path}: revision {info.revision}, log index {info.index}, {info.size} bytes")
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from raft_actors import restore_cluster

    cluster = restore_cluster(args.path, args.cluster, args.replicas, data_dir=args.data_dir, detached=True,
                              namespace=args.namespace)
    print(f"restored {args.path} as cluster {args.cluster!r} ({args.replicas} replicas, data in {cluster.data_dir})")
    print(format_status(cluster.status()))
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    with _client(args) as c:
        w = c.watch(_arg(args.key), start_revision=args.rev or None, prefix=args.prefix)
        seen = 0
        try:
            for ev in w:
                print(f"{ev.type.upper()} {show(ev.key)} {show(ev.value)} (revision {ev.mod_revision})", flush=True)
                seen += 1
                if args.count and seen >= args.count:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            w.cancel()
    return 0


def _cmd_lease(args: argparse.Namespace) -> int:
    with _client(args) as c:
        if args.action == "grant":
            lease = c.lease(float(args.arg))
            print(f"lease {lease.id} granted with TTL {lease.ttl:g} s")
        elif args.action == "revoke":
            print(f"lease {int(args.arg)} revoked; {c.lease_revoke(int(args.arg))} keys deleted")
        elif args.action == "keepalive":
            print(f"lease {int(args.arg)} renewed for {c.lease_keepalive(int(args.arg)):g} s")
        elif args.action == "ttl":
            st = c.lease_time_to_live(int(args.arg), keys=True)
            keys = ", ".join(show(k) for k in st.keys)
            print(f"lease {st.id}: TTL {st.ttl:g} s, {st.remaining:.1f} s left, keys [{keys}]")
        else:
            for st in c.leases():
                print(f"{st.id}\t{st.ttl:g}\t{st.remaining:.1f}")
    return 0


def _cmd_lock(args: argparse.Namespace) -> int:
    import subprocess

    with _client(args) as c:
        with c.lock(args.lock, ttl=args.ttl, timeout=args.timeout) as lock:
            print(f"acquired {args.lock!r}, fencing token {lock.fencing_token}", flush=True)
            if args.command_line:
                env = dict(os.environ, RAFTKV_LOCK_TOKEN=str(lock.fencing_token))
                return subprocess.call(args.command_line, env=env)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return 0


def _cmd_put(args: argparse.Namespace) -> int:
    with _client(args) as c:
        c.put(_arg(args.key), _arg(args.value))
    print("OK")
    return 0


def _cmd_get(args: argparse.Namespace) -> int:
    from kv import prefix_end

    with _client(args) as c:
        options = dict(serializable=args.serializable, revision=args.rev, keys_only=args.keys_only)
        key = _arg(args.key)
        if args.prefix:
            if key == "":  # etcdctl: an empty prefix means every key
                resp = c.get_range(b"\0", b"\0", sort_order="ascend", **options)
            else:
                resp = c.get_range(key, prefix_end(key), sort_order="ascend", **options)
        else:
            resp = c.get_range(key, **options)
    if args.json:
        print(json.dumps({"header": {"revision": resp.header.revision, "raft_term": resp.header.raft_term},
                          "kvs": [_kv_json(kv, args.keys_only) for kv in resp.kvs],
                          "count": resp.count, "more": resp.more}))
        return 0
    for kv in resp.kvs:
        print(show(kv.key))
        if not args.keys_only:
            print(show(kv.value))
    return 0


def _cmd_del(args: argparse.Namespace) -> int:
    with _client(args) as c:
        key = _arg(args.key)
        if args.prefix and key == "":  # etcdctl: an empty prefix means every key
            print(c.delete(b"\0", range_end=b"\0"))
        else:
            print(c.delete(key, prefix=args.prefix))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        print(format_status(c.status()))
    return 0


def _client(args: argparse.Namespace) -> Any:
    from client.client import connect

    return connect(args.name, namespace=args.namespace)


# -- parser -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from client.bench import add_arguments as add_bench_arguments

    parser = argparse.ArgumentParser(prog="raftkv", description="raftkv: an etcd-style store replicated with "
                                     "Raft on Ray actors.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ray_opts = argparse.ArgumentParser(add_help=False)
    ray_opts.add_argument("--address", default=DEFAULT_ADDRESS,
                          help='Ray cluster address (default "auto": the running local Ray cluster)')
    ray_opts.add_argument("--namespace", default=DEFAULT_NAMESPACE, help='Ray namespace (default "raftkv")')
    conn = argparse.ArgumentParser(add_help=False, parents=[ray_opts])
    conn.add_argument("--name", default=DEFAULT_NAME, help='cluster name (default "default")')
    layout = argparse.ArgumentParser(add_help=False, parents=[ray_opts])  # a new cluster's shape
    layout.add_argument("--replicas", type=int, default=3, help="number of replicas (default 3)")
    layout.add_argument("--data-dir", default=None, help="where replicas keep their logs (default <tmp>/raftkv/NAME)")

    p = sub.add_parser("demo", help="run the quickstart tour on a private Ray instance")
    p.set_defaults(func=_cmd_demo, needs_ray=False)

    p = sub.add_parser("bench", help="measure a fresh 3-replica cluster on a private Ray instance")
    add_bench_arguments(p)
    p.set_defaults(func=_cmd_bench, needs_ray=False)

    p = sub.add_parser("chaos", help="faults against a fresh cluster, checked for linearizability "
                       "(see `raftkv chaos --help`)", add_help=False)
    p.set_defaults(func=None, needs_ray=False)

    p = sub.add_parser("bench-core", help="measure the Raft core, the simulator and the WAL (no Ray)")
    p.set_defaults(func=_cmd_bench_core, needs_ray=False)

    p = sub.add_parser("bench-snapshot", help="memory, snapshot pause, restart and catch-up with many keys "
                       "(see `raftkv bench-snapshot --help`)", add_help=False)
    p.set_defaults(func=None, needs_ray=False)

    p = sub.add_parser("start", parents=[layout], help="start a detached cluster on a running Ray cluster")
    p.add_argument("cluster", metavar="NAME")
    p.add_argument("--auto-replace", action="store_true",
                   help="replace a replica whose actor or Ray node is lost (a detached supervisor actor heals)")
    p.add_argument("--replace-after", type=float, default=30.0, metavar="S",
                   help="seconds a replica must be lost before it is replaced (default 30)")
    p.set_defaults(func=_cmd_start, needs_ray=True)

    p = sub.add_parser("stop", parents=[ray_opts], help="stop a cluster (its data directory is kept)")
    p.add_argument("cluster", metavar="NAME")
    p.set_defaults(func=_cmd_stop, needs_ray=True)

    p = sub.add_parser("members", parents=[ray_opts], help="list | add | remove INDEX: the cluster's members")
    p.add_argument("action", choices=["list", "add", "remove"])
    p.add_argument("cluster", metavar="NAME")
    p.add_argument("index", nargs="?", type=int, default=None, metavar="INDEX")
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds (default 120)")
    p.set_defaults(func=_cmd_members, needs_ray=True)

    p = sub.add_parser("put", parents=[conn], help="set KEY to VALUE; prints OK")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    p.set_defaults(func=_cmd_put, needs_ray=True)

    p = sub.add_parser("get", parents=[conn], help="print KEY and its value (or every key with that prefix)")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--prefix", action="store_true", help="every key that starts with KEY")
    p.add_argument("--serializable", action="store_true", help="read a replica's local state (may be stale)")
    p.add_argument("--rev", type=int, default=0, metavar="N", help="read as of revision N")
    p.add_argument("--keys-only", action="store_true", help="print keys only")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_get, needs_ray=True)

    p = sub.add_parser("del", parents=[conn], help="delete KEY (or every key with that prefix); prints the count")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--prefix", action="store_true", help="every key that starts with KEY")
    p.set_defaults(func=_cmd_del, needs_ray=True)

    p = sub.add_parser("status", parents=[conn], help="a table of the replicas: role, term, leader, commit, applied")
    p.set_defaults(func=_cmd_status, needs_ray=True)

    p = sub.add_parser("watch", parents=[conn], help="print changes to KEY (or a prefix) as they happen")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--prefix", action="store_true", help="every key that starts with KEY")
    p.add_argument("--rev", type=int, default=0, metavar="N", help="replay from revision N first")
    p.add_argument("--count", type=int, default=0, metavar="N", help="stop after N events")
    p.set_defaults(func=_cmd_watch, needs_ray=True)

    p = sub.add_parser("lease", parents=[conn], help="grant TTL | revoke ID | keepalive ID | ttl ID | list")
    p.add_argument("action", choices=["grant", "revoke", "keepalive", "ttl", "list"])
    p.add_argument("arg", nargs="?", default="0", metavar="TTL_OR_ID")
    p.set_defaults(func=_cmd_lease, needs_ray=True)

    p = sub.add_parser("lock", parents=[conn], help="hold lock NAME (until Ctrl-C, or while COMMAND runs with "
                       "RAFTKV_LOCK_TOKEN set to the fencing token)")
    p.add_argument("lock", metavar="NAME")
    p.add_argument("command_line", nargs=argparse.REMAINDER, metavar="COMMAND")
    p.add_argument("--ttl", type=float, default=10.0, help="session lease TTL in seconds (default 10)")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    p.set_defaults(func=_cmd_lock, needs_ray=True)

    p = sub.add_parser("snapshot", parents=[conn], help="save a consistent backup of the cluster to PATH")
    p.add_argument("path", metavar="PATH")
    p.set_defaults(func=_cmd_snapshot, needs_ray=True)

    p = sub.add_parser("restore", parents=[layout], help="start a new detached cluster NAME from a backup file")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--name", dest="cluster", required=True, metavar="NAME", help="the new cluster's name")
    p.set_defaults(func=_cmd_restore, needs_ray=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `raftkv` command line.

    Returns 0 on success. Raises SystemExit(1) on a raftkv error (message on
    stderr as `Error: ...`), SystemExit(2) on bad usage (from argparse).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench-snapshot"]:
        from client.bench_snapshot import main as bench_snapshot_main

        return bench_snapshot_main(argv[1:])
    if argv[:1] == ["chaos"]:
        # The chaos runner owns its options (and its exit code: 1 when a checker fails).
        from client.chaos import main as chaos_main

        return chaos_main(argv[1:])
    args = build_parser().parse_args(argv)
    if not structlog.is_configured():
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                            logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is for results
    attached = False
    try:
        if args.needs_ray:
            attached = _attach(args.address, args.namespace)
        return args.func(args)
    except RaftKVError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if attached:
            import ray

            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
