"""The `raftkv` command line (in-process, against a cluster from make_cluster),
the quickstart (in a subprocess: it starts its own Ray) and the bench's entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from client import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; (exit code, stdout, stderr)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def conn(cluster) -> list[str]:
    return ["--name", cluster.name, "--namespace", cluster.namespace]


# -- pure helpers (no Ray) ----------------------------------------------------------
def test_show_values():
    assert cli.show("plain") == "plain"
    assert cli.show("é".encode()) == "é"
    assert cli.show(b"\xff\x00") == repr(b"\xff\x00")


def test_format_status_marks_missing_fields():
    table = cli.format_status([
        {"replica": 0, "role": "leader", "term": 3, "leader": 0, "commit_index": 9, "applied_index": 9},
        {"replica": 1, "role": "down"},
    ])
    lines = table.splitlines()
    assert lines[0].split() == ["replica", "role", "term", "leader", "commit", "applied"]
    assert lines[1].split() == ["0", "leader", "3", "0", "9", "9"]
    assert lines[2].split() == ["1", "down", "-", "-", "-", "-"]


def test_bad_usage_exits_2(capsys):
    assert run(capsys)[0] == 2  # no command
    assert run(capsys, "frobnicate")[0] == 2
    assert run(capsys, "put", "only-a-key")[0] == 2
    assert run(capsys, "get", "k", "--rev", "not-a-number")[0] == 2


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "status" in out and "bench" in out


def test_bench_help_exits_0(capsys):
    from client import bench

    with pytest.raises(SystemExit) as exc:
        bench.main(["--help"])
    assert exc.value.code == 0
    assert "--writers" in capsys.readouterr().out
    code, out, _ = run(capsys, "bench", "--help")
    assert code == 0 and "--seconds" in out


def test_bench_table_formats_a_result():
    from client import bench

    result = {"ray_rtt_ms": 1.5, "put_p50_ms": 4.0, "put_p99_ms": 9.0, "put_p50_over_rtt": 2.67,
              "writers": 64, "readers": 64, "writes_per_s": 12000, "writes_per_s_ray_tasks": 9000, "ray_tasks": 4,
              "lin_reads_per_s": 21000, "ser_reads_per_s": 30000, "replicas": 3, "value_bytes": 100,
              "seconds": 5.0, "cpus": 2, "wall_s": 30.0,
              "goals": {"writes_per_s>=10000": True, "put_p50<=3x_rtt": True, "lin_reads_per_s>=20000": True}}
    table = bench.format_table(result)
    assert "12,000" in table and "1.50 ms" in table and "NOT met" not in table


# -- against a real cluster --------------------------------------------------------------
@pytest.mark.ray
def test_put_get_del_status(make_cluster, capsys):
    cluster = make_cluster()
    c = conn(cluster)

    assert run(capsys, "put", "greeting", "hello world", *c) == (0, "OK\n", "")
    code, out, _ = run(capsys, "get", "greeting", *c)
    assert code == 0 and out.splitlines() == ["greeting", "hello world"]

    code, out, _ = run(capsys, "get", "greeting", "--serializable", *c)
    assert code == 0 and out.splitlines() in (["greeting", "hello world"], [])  # a follower may lag

    code, out, _ = run(capsys, "get", "missing", *c)
    assert code == 0 and out == ""

    for k, v in [("app/a", "1"), ("app/b", "2"), ("apple", "3")]:
        assert run(capsys, "put", k, v, *c)[0] == 0
    code, out, _ = run(capsys, "get", "app/", "--prefix", *c)
    assert code == 0 and out.splitlines() == ["app/a", "1", "app/b", "2"]
    code, out, _ = run(capsys, "get", "app/", "--prefix", "--keys-only", *c)
    assert out.splitlines() == ["app/a", "app/b"]

    code, out, _ = run(capsys, "get", "app/", "--prefix", "--json", *c)
    doc = json.loads(out)
    assert [kv["key"] for kv in doc["kvs"]] == ["app/a", "app/b"] and doc["count"] == 2
    assert doc["kvs"][0]["value"] == "1" and doc["header"]["revision"] >= 4

    # --rev reads the past: the value greeting had before it was overwritten
    first_rev = json.loads(run(capsys, "get", "greeting", "--json", *c)[1])["kvs"][0]["mod_revision"]
    assert run(capsys, "put", "greeting", "bye", *c)[0] == 0
    assert run(capsys, "get", "greeting", "--rev", str(first_rev), *c)[1].splitlines() == ["greeting", "hello world"]
    assert run(capsys, "get", "greeting", *c)[1].splitlines() == ["greeting", "bye"]

    code, out, _ = run(capsys, "del", "app/", "--prefix", *c)
    assert (code, out) == (0, "2\n")
    assert run(capsys, "del", "app/", "--prefix", *c)[1] == "0\n"
    assert run(capsys, "get", "app", "--prefix", *c)[1].splitlines() == ["apple", "3"]
    assert run(capsys, "del", "apple", *c)[1] == "1\n"

    code, out, _ = run(capsys, "status", *c)
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["replica", "role", "term", "leader", "commit", "applied"]
    assert len(rows) == 1 + cluster.replicas
    leaders = [r for r in rows[1:] if r[1] == "leader"]
    assert len(leaders) == 1
    assert all(r[3] == leaders[0][0] for r in rows[1:])  # everyone names the same leader


@pytest.mark.ray
def test_raftkv_errors_exit_1(make_cluster, capsys):
    cluster = make_cluster()
    code, out, err = run(capsys, "get", "k", "--name", "no-such-cluster", "--namespace", cluster.namespace)
    assert code == 1 and out == ""
    assert err.startswith("Error: ") and "no-such-cluster" in err

    code, _, err = run(capsys, "status", "--name", "no-such-cluster", "--namespace", cluster.namespace)
    assert code == 1 and err.startswith("Error: ")

    code, _, err = run(capsys, "get", "k", "--rev", "99999", *conn(cluster))  # a future revision
    assert code == 1 and err.startswith("Error: ")

    code, _, err = run(capsys, "stop", "no-such-cluster", "--namespace", cluster.namespace)
    assert code == 1 and err.startswith("Error: ")


@pytest.mark.ray
def test_members_list_add_remove(make_cluster, capsys):
    cluster = make_cluster()
    ns = ("--namespace", cluster.namespace)
    code, out, _ = run(capsys, "members", "list", cluster.name, *ns)
    assert code == 0 and [line.split()[:2] for line in out.splitlines()] == [[str(i), "voter"] for i in range(3)]
    code, out, _ = run(capsys, "members", "add", cluster.name, *ns)
    assert code == 0 and out.startswith("added replica 3")
    code, out, _ = run(capsys, "members", "remove", cluster.name, "0", *ns)
    assert code == 0 and out.startswith("removed replica 0")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["1", "2", "3"]
    code, _, err = run(capsys, "members", "remove", cluster.name, *ns)  # no index
    assert code == 1 and "INDEX" in err
    code, _, err = run(capsys, "members", "remove", cluster.name, "0", *ns)  # not a member any more
    assert code == 1 and err.startswith("Error: ")


@pytest.mark.ray
def test_cli_does_not_touch_ray_it_did_not_start(make_cluster, capsys):
    import ray

    cluster = make_cluster()
    assert run(capsys, "put", "k", "v", *conn(cluster))[0] == 0
    assert ray.is_initialized()  # the CLI neither re-initialized nor shut down the session's Ray


@pytest.mark.ray
def test_bench_measures_the_ray_round_trip(make_cluster):
    from client import bench

    cluster = make_cluster()
    rtt = bench.measure_rtt(cluster.handle(cluster.leader()), calls=20, warmup=2)
    assert 0 < rtt < 1000


# -- the quickstart, in its own process (it starts its own Ray instance) ----------------------
@pytest.mark.ray
def test_quickstart_runs_and_verifies():
    proc = subprocess.run([sys.executable, "-m", "examples.quickstart"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for phrase in ("Wrote 1000 keys", "Killed leader replica", "Verified 1000 of 1000 keys",
                   "1000 of 1000 keys back", "All checks passed"):
        assert phrase in out, out
    assert "FAILED" not in out
