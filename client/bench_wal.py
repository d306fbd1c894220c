"""Throughput of the durable log (raft_actors.wal.FileStorage) with group commit, fsync on.

Run: `python -m client.bench_wal [directory]` (prints one JSON object).

* appends_per_s: entries appended per second, in batches of `batch` entries of
  `size` data bytes, one `sync()` (one fdatasync) per batch.
* syncs_per_s: batches, hence syncs, per second in that run.
* fdatasync_median_ms: median latency of `os.fdatasync` after a small append to
  a plain file in the same directory, measured in the same run: the disk's floor.
* sync_median_ms: median latency of `FileStorage.sync()` after a one-entry append.
* hard_state_appends_per_s: as appends_per_s, but every batch also advances the
  commit index, so every sync also replaces the hard-state file (as a replica does).
* load_entries_per_s: entries recovered per second by `load()` of the first run's log.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from raft_actors.types import Entry, HardState
from raft_actors.wal import FileStorage


def _batches(records: int, batch: int, size: int) -> list[list[Entry]]:
    payloads = [os.urandom(size) for _ in range(batch)]
    return [
        [Entry(1, i, payloads[(i - 1) % batch]) for i in range(start, min(start + batch, records + 1))]
        for start in range(1, records + 1, batch)
    ]


def _fdatasync_ms(directory: Path, samples: int) -> float:
    path = directory / "fdatasync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        times = []
        for _ in range(samples):
            os.write(fd, b"x" * 128)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times) * 1000


def _sync_ms(directory: Path, samples: int) -> float:
    storage = FileStorage(directory / "small")
    storage.load()
    times = []
    for i in range(1, samples + 1):
        storage.append([Entry(1, i, b"x" * 100)])
        t0 = time.perf_counter()
        storage.sync()
        times.append(time.perf_counter() - t0)
    storage.close()
    return statistics.median(times) * 1000


def _run(directory: Path, batches: list[list[Entry]], commit_each: bool) -> float:
    storage = FileStorage(directory)
    storage.load()
    t0 = time.perf_counter()
    for entries in batches:
        storage.append(entries)
        if commit_each:
            storage.set_hard_state(HardState(1, 1, entries[-1].index))
        storage.sync()
    elapsed = time.perf_counter() - t0
    storage.close()
    return elapsed


def bench_wal(directory: str, records: int = 200_000, batch: int = 100, size: int = 100) -> dict:
    """Measure FileStorage throughput and fsync latency in a scratch folder of `directory`.

    Args:
        directory: where to write (the figures are this file system's); a
            temporary folder is made inside it and removed afterwards.
        records: entries appended in the main run.
        batch: entries per append and per sync.
        size: data bytes per entry.

    Returns:
        A JSON-ready dict; the keys are described in this module's docstring.
    """
    work = Path(tempfile.mkdtemp(prefix="bench-wal-", dir=directory))
    try:
        fsync_ms = _fdatasync_ms(work, 200)
        sync_ms = _sync_ms(work, 200)
        batches = _batches(records, batch, size)
        elapsed = _run(work / "plain", batches, commit_each=False)
        hs_batches = batches[: max(1, len(batches) // 4)]
        hs_elapsed = _run(work / "hardstate", hs_batches, commit_each=True)
        t0 = time.perf_counter()
        loaded = len(FileStorage(work / "plain").load().entries)
        load_elapsed = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "appends_per_s": round(records / elapsed),
        "syncs_per_s": round(len(batches) / elapsed),
        "fdatasync_median_ms": round(fsync_ms, 3),
        "sync_median_ms": round(sync_ms, 3),
        "hard_state_appends_per_s": round(sum(map(len, hs_batches)) / hs_elapsed),
        "load_entries_per_s": round(loaded / load_elapsed),
        "records": records,
        "batch": batch,
        "entry_bytes": size,
    }


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(json.dumps(bench_wal(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-wal-") as scratch:
            print(json.dumps(bench_wal(scratch)))
