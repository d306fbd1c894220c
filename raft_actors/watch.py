"""Watches, server side: long polls that wait for changes and answer with events.

Theory of operation
-------------------
A client does not call the leader once per watcher, nor once per event. Its
`WatchHub` (client/watch.py) sends one actor call, `RaftNode.watch_poll`,
covering every watcher it has, as a mapping

    {watch_id: (key, range_end, next_revision, prev_kv, filters)}

with keys in stored (bytes) form: range_end None for the single key, b"\\0"
for every key >= key, else the exclusive end; filters a tuple of "noput" /
"nodelete". The leader's `WatchServer.poll` answers with a `WatchBatch`: the
store revision it was built at and, per watcher, either
`(events, next_revision)` or an error instance (`Compacted`: next_revision is
at or below the compaction point; `InvalidRequest`: a malformed watcher).

The guarantees follow from how `next_revision` is used:

- Events come from the applied, hence committed, history, which is the same on
  every replica: any leader, before or after a fail-over, lists the same events
  for the same revisions.
- For each watcher a reply holds the events of whole revisions, from the
  watcher's next_revision up to (not including) the returned next_revision;
  every change in that span is in the reply or was filtered out. The client
  sends the returned next_revision with its next poll, so nothing is listed
  twice and nothing is skipped, whichever replica answers (ordered, unique,
  reliable, atomic, resumable). next_revision - 1 is the watcher's bookmark.
- A reply is bounded (`max_events`, `max_bytes` over all its watchers, and
  `max_scan` changes looked at per watcher) and cut only between revisions;
  one revision always goes whole, however large. A watcher cut short is in
  `WatchBatch.more`; its next poll continues where this one stopped (the
  client polls again at once, and that poll returns at once).

Waiting: `poll` collects; if no watcher has anything to deliver it waits for
`notify` (the replica calls it after applying entries) or `wake` (leadership
lost, replica closing), up to wait_s, and collects again. Between rounds it
keeps the next_revisions it advanced over filtered-out changes, so a waiting
poll costs O(new changes), not O(history). A poll asked of a replica that is
not (or no longer) the leader returns None; the replica then answers
"not_leader" and the client follows the leader.

Not deterministic state: nothing here is replicated or persisted; it only
reads the store.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import structlog

from kv.errors import InvalidRequest, RaftKVError
from kv.mvcc import Event, MVCCStore

__all__ = ["WatchBatch", "WatchServer", "WATCH_FILTERS", "MAX_REPLY_EVENTS", "MAX_REPLY_BYTES"]

log = structlog.get_logger(__name__)

WATCH_FILTERS = frozenset({"noput", "nodelete"})
MAX_REPLY_EVENTS = 1000
MAX_REPLY_BYTES = 1 << 20
MAX_SCAN = 20_000  # changes looked at per watcher per reply (filtered ones included)
MAX_WAIT_S = 5.0  # a longer wait_s is cut to this

_Spec = tuple  # (key, range_end, next_revision, prev_kv, filters), validated


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """One answer to a watch poll.

    Attributes:
        revision: the store revision the answer was built at.
        results: per watch id, `(events, next_revision)` (events: a tuple of
            kv.mvcc.Event in revision order, whole revisions only; every
            change of the range in [asked next_revision, next_revision) is in
            it or was filtered out), or an error instance for that watcher.
        more: watch ids cut short by the reply bounds: poll again at once.
    """

    revision: int
    results: dict[int, Any]
    more: frozenset[int] = field(default_factory=frozenset)

    @property
    def ready(self) -> bool:
        """Whether some watcher has events or an error (worth answering now)."""
        return any(not isinstance(r, tuple) or r[0] for r in self.results.values())


def parse_watcher(spec: Any) -> _Spec | InvalidRequest:
    """Check one watcher tuple from a client; return it normalised, or the error."""
    try:
        key, range_end, next_revision, prev_kv, filters = spec
    except (TypeError, ValueError):
        return InvalidRequest(f"a watcher is (key, range_end, next_revision, prev_kv, filters), got {spec!r}")
    if type(key) is not bytes or not key:
        return InvalidRequest(f"watch key must be non-empty bytes, got {key!r}")
    if range_end is not None and (type(range_end) is not bytes or not range_end):
        return InvalidRequest(f"watch range_end must be non-empty bytes or None, got {range_end!r}")
    if type(next_revision) is not int or next_revision < 1:
        return InvalidRequest(f"watch next_revision must be an int >= 1, got {next_revision!r}")
    if type(prev_kv) is not bool:
        return InvalidRequest(f"watch prev_kv must be a bool, got {prev_kv!r}")
    if not isinstance(filters, (tuple, list, frozenset, set)) or not set(filters) <= WATCH_FILTERS:
        return InvalidRequest(f"watch filters must be a tuple of {sorted(WATCH_FILTERS)}, got {filters!r}")
    return (key, range_end, next_revision, prev_kv, frozenset(filters))


def _event_bytes(ev: Event) -> int:
    kv, n = ev.kv, 64
    n += len(kv.key) + len(kv.value)
    prev = ev.prev_kv
    if prev is not None:
        n += 48 + len(prev.key) + len(prev.value)
    return n


class WatchServer:
    """Answers watch polls from one replica's store. Runs on the replica's loop.

    Args:
        store: returns the current MVCC store (a snapshot restore replaces it).
        max_events, max_bytes: bounds of one reply, over all its watchers.
        max_scan: changes looked at per watcher per reply.
    """

    def __init__(self, store: Callable[[], MVCCStore], *, max_events: int = MAX_REPLY_EVENTS,
                 max_bytes: int = MAX_REPLY_BYTES, max_scan: int = MAX_SCAN) -> None:
        self._store = store
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_scan = max_scan
        self._changed: asyncio.Event | None = None  # set (and replaced) when there may be news
        self._notified = -1  # the revision of the last notify
        self.stats = {"polls": 0, "waiting": 0, "events": 0}

    # --- waking ---------------------------------------------------------------

    def notify(self, revision: int) -> None:
        """The store may have new changes (call after applying entries)."""
        if revision != self._notified:
            self._notified = revision
            self.wake()

    def wake(self) -> None:
        """Wake every waiting poll (leadership lost, replica closing)."""
        ev = self._changed
        if ev is not None:
            self._changed = None
            ev.set()

    def _changed_event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    # --- answering ------------------------------------------------------------

    async def poll(self, watchers: Any, wait_s: float, serving: Callable[[], bool]) -> WatchBatch | None:
        """Long poll: answer as soon as a watcher has events (or an error),
        else after wait_s with bookmarks only.

        Args:
            watchers: {watch_id: (key, range_end, next_revision, prev_kv, filters)}.
            wait_s: the longest wait, seconds (0: answer at once; cut to 5 s).
            serving: whether this replica may answer (it leads and is open);
                checked before every round.

        Returns:
            The WatchBatch, or None if `serving()` turned false.
        """
        specs: dict[int, Any] = {}
        if isinstance(watchers, dict):
            specs = {wid: parse_watcher(spec) for wid, spec in watchers.items()}
        else:
            log.warning("watch.bad_poll", watchers=type(watchers).__name__)
        try:
            wait = min(max(float(wait_s), 0.0), MAX_WAIT_S)
        except (TypeError, ValueError):
            wait = 0.0
        if math.isnan(wait):
            wait = 0.0
        self.stats["polls"] += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            if not serving():
                return None
            changed = self._changed_event()  # taken before collecting: no wake-up is missed
            batch = self.collect(specs)
            remaining = deadline - loop.time()
            if batch.ready or remaining <= 0:
                self.stats["events"] += sum(len(r[0]) for r in batch.results.values() if isinstance(r, tuple))
                return batch
            # Nothing to send yet: resume from where this round got to (past
            # filtered-out changes), so waiting rounds cost O(new changes).
            for wid, r in batch.results.items():
                spec = specs[wid]
                if isinstance(r, tuple) and not isinstance(spec, RaftKVError):
                    specs[wid] = (spec[0], spec[1], r[1], spec[3], spec[4])
            if batch.more:
                await asyncio.sleep(0)  # cut by max_scan with nothing to send: go on, but let others run
                continue
            self.stats["waiting"] += 1
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass
            finally:
                self.stats["waiting"] -= 1

    def collect(self, specs: dict[int, Any]) -> WatchBatch:
        """Build one reply now, without waiting (see the module docstring).

        Args:
            specs: {watch_id: parse_watcher(...) result}; error instances are
                answered as they are.
        """
        store = self._store()
        current = store.revision
        results: dict[int, Any] = {}
        more: list[int] = []
        budget_events, budget_bytes = self.max_events, self.max_bytes
        sent = False  # something is in this reply already
        for wid, spec in specs.items():
            if isinstance(spec, RaftKVError):
                results[wid] = spec
                continue
            key, range_end, start, prev_kv, filters = spec
            if start > current:
                results[wid] = ((), start)  # a replica behind the watcher: nothing new yet
                continue
            try:
                changes = store.iter_changes(start, key, range_end, prev_kv=prev_kv)
            except RaftKVError as exc:
                results[wid] = exc
                continue
            no_put, no_delete = "noput" in filters, "nodelete" in filters
            events: list[Event] = []
            group: list[Event] = []
            group_rev = 0
            group_bytes = 0
            scanned = 0
            next_revision = current + 1
            for ev in changes:
                if ev.revision != group_rev:
                    if group:
                        events.extend(group)
                        budget_events -= len(group)
                        budget_bytes -= group_bytes
                        sent = True
                        group = []
                        group_bytes = 0
                    # A new revision: the only place a reply may be cut. Whatever
                    # is cut, the reply has at least one revision of events (the
                    # first one found is always taken), so every poll progresses.
                    if (group_rev and scanned >= self.max_scan) or \
                            (sent and (budget_events <= 0 or budget_bytes <= 0)):
                        next_revision = ev.revision
                        more.append(wid)
                        break
                    group_rev = ev.revision
                scanned += 1
                if (no_put and ev.type == "put") or (no_delete and ev.type == "delete"):
                    continue
                group.append(ev)
                group_bytes += _event_bytes(ev)
            else:
                if group:
                    events.extend(group)
                    budget_events -= len(group)
                    budget_bytes -= group_bytes
                    sent = True
            results[wid] = (tuple(events), next_revision)
        return WatchBatch(current, results, frozenset(more))
