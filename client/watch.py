"""Watches, client side: many watchers, one long-poll stream per client.

Theory of operation
-------------------
`client.watch(...)` returns a `Watch`: an iterator (sync and async) of change
events of a key, prefix or range. Every watcher of a client is served by the
client's one `WatchHub`, which lives on the client's loop thread and keeps the
table of active watchers, each with its `next_revision`: the first revision
it has not received yet. The hub issues ONE actor call at a time,
`watch_poll(watchers, wait_s)`, to the leader (through the client's routing:
leader hints, fail-over, retries), covering every watcher; the leader answers
as soon as some watcher has events, or after wait_s (0.5 s) with bookmarks
only (see raft_actors/watch.py). The hub puts each watcher's events into
that watcher's queue, sets its next_revision to what the leader returned, and
polls again at once. So N watchers cost one stream of calls, not N, and never
one call per event.

Why the guarantees hold (etcd's watch properties):
- ordered, unique, reliable, atomic: the leader returns, for a watcher, the
  events of whole revisions in [next_revision, returned next_revision), every
  change in that span included unless filtered out; the hub applies a reply
  to a watcher only if the watcher's next_revision is still the one the poll
  was sent with, and checks the revisions are in that span and in order.
- resumable: a poll lost to a dead or deposed leader is sent again, with the
  same next_revisions, to the new leader; events come from committed history,
  identical on every replica.
- bookmarkable: every reply moves next_revision to past the revision the
  leader was at, also when there was nothing for the watcher;
  `Watch.progress_revision` is the revision up to which the consumer has been
  handed every event (see below).

Adding a watcher while a long poll is in flight cancels that poll (its answer,
if any, is dropped, so nothing is lost: the next_revisions did not move) and
issues a new one covering every watcher. A poll that carries a watcher whose
`watch()` call is waiting for its start (start_revision given) asks the leader
not to wait (wait_s=0), so `watch()` returns after one round trip, raising
Compacted at once if the start is compacted.

A slow consumer: a watcher whose queue holds more than MAX_BUFFERED_EVENTS
undelivered events is left out of the polls (its next_revision stays put;
nothing is dropped) until the consumer has taken it below half of that; then
it is fetched again from where it stopped. If history was compacted past that
point meanwhile, the iterator raises Compacted after the buffered events. The
other watchers of the client are not held up.

Threads: the hub's state is touched on the client's loop thread only; a
Watch's queue is guarded by its own lock, so it can be iterated from any
thread (sync) or any event loop (async, the client's own loop included).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable, Iterator

import structlog

from kv.errors import ClientClosed, InvalidRequest
from kv.mvcc import Event
from kv.requests import Range, key_bytes, prefix_end
from kv.responses import KeyValue
from kv.validation import range_bounds, validate
from raft_actors.watch import WATCH_FILTERS, WatchBatch

if TYPE_CHECKING:
    from client.client import Client

__all__ = ["Watch", "WatchHub", "WatchResponse", "POLL_WAIT_S", "MAX_BUFFERED_EVENTS"]

log = structlog.get_logger(__name__)

POLL_WAIT_S = 0.5  # how long the leader holds a poll with nothing to say (well below ATTEMPT_TIMEOUT)
MAX_BUFFERED_EVENTS = 10_000  # per watcher: more undelivered than this and the hub stops fetching for it
RESUME_BELOW = MAX_BUFFERED_EVENTS // 2


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """What one watcher got from one poll.

    Attributes:
        events: the events (kv.Event, keys and values typed as the watch
            asked), whole revisions, in revision order; empty for a progress
            (bookmark) response.
        revision: every change of the watched range up to this revision is in
            this response or an earlier one (or was filtered out).
    """

    events: tuple[Event, ...]
    revision: int


def _out_key(key: bytes) -> bytes | str:
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key  # as client.get: bytes that are not utf-8 stay bytes


def _as_str_event(ev: Event) -> Event:
    """The event with str keys (and a str empty value for a delete)."""
    kv = ev.kv
    if ev.type == "delete":
        new_kv = KeyValue(_out_key(kv.key), "", 0, kv.mod_revision, 0, 0)
    else:
        new_kv = KeyValue(_out_key(kv.key), kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
    p = ev.prev_kv
    prev = None if p is None else KeyValue(_out_key(p.key), p.value, p.create_revision, p.mod_revision,
                                           p.version, p.lease)
    return Event(ev.type, ev.revision, new_kv, prev)


def _wake_future(fut: asyncio.Future, outcome: Any = None) -> None:
    if fut.done():
        return
    if isinstance(outcome, BaseException):
        fut.set_exception(outcome)
    else:
        fut.set_result(outcome)


def _settle(fut: Any, loop: asyncio.AbstractEventLoop | None, outcome: Any) -> None:
    """Resolve a waiter's future from any thread (asyncio futures on their loop)."""
    if loop is None:
        try:
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)
        except concurrent.futures.InvalidStateError:  # settled already (close() racing a reply)
            pass
        return
    try:
        loop.call_soon_threadsafe(_wake_future, fut, outcome)
    except RuntimeError:  # that loop is closed: nobody is waiting
        pass


_NOTHING = object()  # _take / _next_event with block=False: nothing buffered


class Watch:
    """The events of one key, prefix or range, in revision order.

    Iterate it (`for ev in w`, `async for ev in w`) for events, or
    `iter_responses()` / `aiter_responses()` for WatchResponse batches
    including empty progress responses. Iteration ends when the watch is
    cancelled (`cancel()`, `client.close()`, leaving a `with` block) and
    raises Compacted if the watcher fell behind a compaction (after every
    event buffered before that point).

    Attributes:
        id: the watch id (unique per client).
        key, range_end: the watched range, as stored (bytes; range_end None
            for a single key, b"\\0" for every key from `key` on).
        prev_kv, filters: as asked.
    """

    def __init__(self, hub: WatchHub, str_keys: bool, key: bytes, range_end: bytes | None, start: int,
                 prev_kv: bool, filters: tuple[str, ...]) -> None:
        self._hub = hub
        self.id = next(hub._ids)
        self.key = key
        self.range_end = range_end
        self.prev_kv = prev_kv
        self.filters = filters
        self._str_keys = str_keys
        self._cond = threading.Condition(threading.Lock())
        # Consumer side, guarded by _cond.
        self._items: deque[WatchResponse] = deque()
        self._pos = 0  # events of _items[0] already handed out (one at a time: a `break` loses none)
        self._unconsumed = 0  # events pushed and not yet handed to the consumer
        self._latest = start - 1  # the newest bookmark pushed
        self._progress = start - 1  # invariant: _unconsumed == 0 implies _progress == _latest
        self._error: BaseException | None = None
        self._cancelled = False
        self._paused = False  # the hub stopped fetching: too much unconsumed
        self._async_waiters: list[asyncio.Future] = []
        # Hub side, touched on the client loop only.
        self._next = start  # the first revision not received yet
        self._acked = False  # a poll has answered for this watcher
        self._ready: tuple[Any, asyncio.AbstractEventLoop | None] | None = None  # watch() waiting for its start

    # --- consumer API -----------------------------------------------------------

    @property
    def progress_revision(self) -> int:
        """The revision up to which every event of this watch has been handed
        to the consumer (or there was none). Moves on while idle, about every
        0.5 s, so it doubles as a bookmark: resuming with
        `start_revision=progress_revision + 1` misses nothing and repeats nothing."""
        with self._cond:
            return self._progress

    @property
    def cancelled(self) -> bool:
        """Whether the watch was cancelled (or its client closed)."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop the watch: iterators return, buffered events are dropped.
        Idempotent, from any thread."""
        with self._cond:
            if self._cancelled:
                return
            self._cancelled = True
            self._items.clear()
            self._pos = 0
            self._unconsumed = 0
            waiters = self._wake_all_locked()
        _wake(waiters)
        self._hub._forget(self)

    def __iter__(self) -> Iterator[Event]:
        # Events leave the buffer one at a time, so breaking out of the loop
        # and iterating again later misses nothing.
        while True:
            ev = self._next_event(block=True)
            if ev is None:
                return
            yield ev

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            ev = self._next_event(block=False)
            if ev is None:
                return
            if ev is _NOTHING:
                await self._await_items()
                continue
            yield ev

    def iter_responses(self) -> Iterator[WatchResponse]:
        """WatchResponses, progress (empty) ones included; ends and raises as iteration does."""
        while True:
            resp = self._take()
            if resp is None:
                return
            self._consumed(resp)
            yield self._typed(resp)

    async def aiter_responses(self) -> AsyncIterator[WatchResponse]:
        """The async twin of iter_responses."""
        while True:
            resp = await self._atake()
            if resp is None:
                return
            self._consumed(resp)
            yield self._typed(resp)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else ("failed" if self._error is not None else "active")
        return (f"Watch(id={self.id}, key={self.key!r}, range_end={self.range_end!r}, "
                f"progress_revision={self._progress}, {state})")

    # --- consumer plumbing --------------------------------------------------------

    def _take(self, block: bool = True) -> Any:
        """The next response; None once cancelled; raises the error once the
        responses before it are taken. When nothing is buffered: waits if
        `block`, else returns _NOTHING."""
        with self._cond:
            while True:
                if self._cancelled:
                    return None
                if self._items:
                    resp = self._items.popleft()
                    if self._pos:  # partly handed out as events: the rest
                        resp = WatchResponse(resp.events[self._pos :], resp.revision)
                        self._pos = 0
                    return resp
                if self._error is not None:
                    raise self._error
                if not block:
                    return _NOTHING
                self._cond.wait()

    async def _atake(self) -> WatchResponse | None:
        while True:
            resp = self._take(block=False)
            if resp is not _NOTHING:
                return resp
            await self._await_items()

    def _next_event(self, block: bool) -> Any:
        """The next event, moving progress_revision along: holding the last
        event of a revision, the consumer has seen that whole revision. None
        once cancelled. When nothing is buffered: waits if `block`, else
        returns _NOTHING. Raises the watch's error once the events before it
        are handed out."""
        while True:
            done = None
            with self._cond:
                if self._cancelled:
                    return None
                if self._items:
                    head = self._items[0]
                    events = head.events
                    if not events:  # a bookmark
                        self._items.popleft()
                        done = head
                        ev = None
                    else:
                        i = self._pos
                        ev = events[i]
                        if i + 1 == len(events):
                            self._items.popleft()
                            self._pos = 0
                            done = head
                        else:
                            self._pos = i + 1
                            if events[i + 1].revision != ev.revision:
                                self._progress = max(self._progress, ev.revision)
                            self._unconsumed -= 1
                else:
                    ev = None
            if done is not None:
                # the events of `done` handed out before this one were already counted
                self._consumed(WatchResponse(done.events[-1:], done.revision) if done.events else done)
            if ev is not None:
                return _as_str_event(ev) if self._str_keys else ev
            if done is None:
                # Nothing buffered: wait (if block); None once cancelled; raises the error.
                resp = self._take(block)
                if resp is None or resp is _NOTHING:
                    return resp
                with self._cond:  # put it back at the head: handed out one event at a time above
                    self._items.appendleft(resp)

    async def _await_items(self) -> None:
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._items or self._cancelled or self._error is not None:
                return
            fut = loop.create_future()
            self._async_waiters.append(fut)
        try:
            await fut
        finally:
            with self._cond:
                if fut in self._async_waiters:
                    self._async_waiters.remove(fut)

    def _consumed(self, resp: WatchResponse) -> None:
        resume = False
        with self._cond:
            self._unconsumed -= len(resp.events)
            self._progress = max(self._progress, resp.revision)
            if self._unconsumed <= 0:
                self._unconsumed = 0
                self._progress = max(self._progress, self._latest)
            if self._paused and self._unconsumed <= RESUME_BELOW and not self._cancelled:
                self._paused = False
                resume = True
        if resume:
            self._hub._resume()

    def _typed(self, resp: WatchResponse) -> WatchResponse:
        if not self._str_keys or not resp.events:
            return resp
        return WatchResponse(tuple(_as_str_event(ev) for ev in resp.events), resp.revision)

    def _wake_all_locked(self) -> list[asyncio.Future]:
        self._cond.notify_all()
        waiters, self._async_waiters = self._async_waiters, []
        return waiters

    # --- hub side (client loop thread) --------------------------------------------

    def _push(self, events: tuple[Event, ...], bookmark: int) -> None:
        """Queue one poll's events (whole revisions) and bookmark."""
        with self._cond:
            if self._cancelled or self._error is not None:
                return
            if not events and bookmark <= self._latest:
                return  # nothing new at all
            self._latest = max(self._latest, bookmark)
            if events:
                self._items.append(WatchResponse(events, bookmark))
                self._unconsumed += len(events)
                if self._unconsumed > MAX_BUFFERED_EVENTS:
                    self._paused = True
            else:
                if not self._unconsumed:
                    self._progress = max(self._progress, bookmark)
                if self._items and not self._items[-1].events:
                    self._items[-1] = WatchResponse((), bookmark)  # progress responses coalesce
                else:
                    self._items.append(WatchResponse((), bookmark))
            waiters = self._wake_all_locked()
        _wake(waiters)

    def _fail(self, exc: BaseException) -> None:
        """End the watch with an error, raised after the buffered events."""
        with self._cond:
            if self._cancelled or self._error is not None:
                return
            self._error = exc
            waiters = self._wake_all_locked()
        _wake(waiters)
        with self._hub._lock:
            self._hub._live.pop(self.id, None)


def _wake(waiters: list[asyncio.Future]) -> None:
    for fut in waiters:
        try:
            fut.get_loop().call_soon_threadsafe(_wake_future, fut)
        except RuntimeError:  # that loop is closed
            pass


def _watch_range(key: Any, prefix: bool, range_end: Any) -> tuple[bytes, bytes | None]:
    if not isinstance(key, (bytes, str)):
        raise InvalidRequest(f"watch key must be bytes or str, got {type(key).__name__}")
    if not isinstance(prefix, bool):
        raise InvalidRequest(f"prefix must be a bool, got {prefix!r}")
    if prefix:
        if range_end is not None:
            raise InvalidRequest("give prefix=True or range_end, not both")
        if key in (b"", ""):
            return b"\0", b"\0"  # every key
        return key_bytes(key), prefix_end(key)
    return range_bounds(key, range_end)


class WatchHub:
    """Every watcher of one client on one long-poll stream (see the module docstring).

    Attributes:
        stats: counters: "polls" issued, "cancelled_polls" (re-issued because
            watchers were added), "replies" applied, "events" received,
            "errors" (failed poll attempts after the client's retries).
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._loop = client._loop
        self._ids = itertools.count(1)
        self._watches: dict[int, Watch] = {}  # active watchers; client loop only
        self._lock = threading.Lock()
        self._live: dict[int, Watch] = {}  # every watch not cancelled nor failed, for close(); under _lock
        self._changed: asyncio.Event | None = None  # set when a watcher joins or resumes
        self._task: asyncio.Task | None = None
        self._closed = False
        self._rotation = 0
        self.stats = {"polls": 0, "cancelled_polls": 0, "replies": 0, "events": 0, "errors": 0}

    # --- creating watches ---------------------------------------------------------

    def watch(self, key: Any, start_revision: int | None = None, prefix: bool = False, *, range_end: Any = None,
              prev_kv: bool = False, filters: Iterable[str] = ()) -> Watch:
        """See Client.watch."""
        client = self._client
        if threading.current_thread() is client._thread:
            raise InvalidRequest("watch() would block the client's own loop; use `await client.awatch(...)` there")
        w, probe = self._new_watch(key, start_revision, prefix, range_end, prev_kv, filters)
        if probe is not None:
            # The start: just after the revision a linearizable read sees, so
            # every write acknowledged after watch() returns is delivered.
            w._next = client._read(probe, False).result().header.revision + 1
            w._latest = w._progress = w._next - 1
            self._register(w)
            return w
        fut: concurrent.futures.Future = concurrent.futures.Future()
        w._ready = (fut, None)
        self._register(w)
        try:
            fut.result()
        except BaseException:
            w.cancel()
            raise
        return w

    async def awatch(self, key: Any, start_revision: int | None = None, prefix: bool = False, *,
                     range_end: Any = None, prev_kv: bool = False, filters: Iterable[str] = ()) -> Watch:
        """See Client.awatch."""
        client = self._client
        w, probe = self._new_watch(key, start_revision, prefix, range_end, prev_kv, filters)
        if probe is not None:
            w._next = (await client._read(probe, False, aio=True)).header.revision + 1
            w._latest = w._progress = w._next - 1
            self._register(w)
            return w
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        w._ready = (fut, loop)
        self._register(w)
        try:
            await fut
        except BaseException:
            w.cancel()
            raise
        return w

    def _new_watch(self, key: Any, start_revision: Any, prefix: bool, range_end: Any, prev_kv: Any,
                   filters: Iterable[str]) -> tuple[Watch, Range | None]:
        client = self._client
        client._check_open()
        start, end = _watch_range(key, prefix, range_end)
        validate(Range(start, end), client.limits)  # key and range checks, as for a read
        if not isinstance(prev_kv, bool):
            raise InvalidRequest(f"prev_kv must be a bool, got {prev_kv!r}")
        if isinstance(filters, (str, bytes)) or not all(isinstance(f, str) for f in filters):
            raise InvalidRequest(f"filters must be a tuple of {sorted(WATCH_FILTERS)}, got {filters!r}")
        filters = tuple(sorted(set(filters)))
        if not set(filters) <= WATCH_FILTERS:
            raise InvalidRequest(f"unknown watch filter in {filters!r}; use {sorted(WATCH_FILTERS)}")
        if start_revision is not None and (type(start_revision) is not int or start_revision < 0):
            raise InvalidRequest(f"start_revision must be None or an int >= 1, got {start_revision!r}")
        now = not start_revision  # None or 0 (etcd's "from now")
        w = Watch(self, type(key) is not bytes, start, end, 1 if now else start_revision, prev_kv, filters)
        return w, (Range(start, None, count_only=True) if now else None)

    def _register(self, w: Watch) -> None:
        with self._lock:
            if self._client._closed or self._closed:
                raise ClientClosed("the client is closed; create a new one with client.connect(name)")
            self._live[w.id] = w
        self._loop.call_soon_threadsafe(self._add, w)

    # --- lifecycle (any thread) -----------------------------------------------------

    def close(self) -> None:
        """Cancel every watch (their iterators return). Idempotent."""
        with self._lock:
            self._closed = True
            live = list(self._live.values())
        for w in live:
            w.cancel()
            self._settle_ready(w, ClientClosed("the client was closed"))
        if self._task is not None and threading.current_thread() is not self._client._thread:
            try:  # stop the poll loop now, so that the client's loop stops with nothing pending
                asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(2)
            except Exception:  # the loop is gone or stuck: it is being stopped anyway
                pass

    async def _stop(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _forget(self, w: Watch) -> None:
        with self._lock:
            self._live.pop(w.id, None)
        if threading.current_thread() is self._client._thread:
            self._remove(w)
            return
        try:
            self._loop.call_soon_threadsafe(self._remove, w)
        except RuntimeError:  # the client's loop is gone: nothing left to forget
            pass

    def _resume(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._kick)
        except RuntimeError:
            pass

    # --- the poll loop (client loop thread) -----------------------------------------

    def _add(self, w: Watch) -> None:
        if self._closed or self._client._closed or w._cancelled:
            w.cancel()
            self._settle_ready(w, ClientClosed("the client was closed"))
            return
        self._watches[w.id] = w
        if self._task is None or self._task.done():
            self._changed = asyncio.Event()
            self._task = self._loop.create_task(self._run())
        self._kick()

    def _remove(self, w: Watch) -> None:
        self._watches.pop(w.id, None)
        self._settle_ready(w, ClientClosed("the watch was cancelled before it started"))

    def _kick(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def _settle_ready(self, w: Watch, outcome: Any) -> None:
        ready, w._ready = w._ready, None
        if ready is not None:
            _settle(ready[0], ready[1], outcome)

    async def _run(self) -> None:
        changed = self._changed
        assert changed is not None
        backoff = 0.05
        while not self._closed and not self._client._closed:
            try:
                ok = await self._poll_once(changed)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end every watch silently
                log.exception("watch.hub_failed", cluster=self._client.name)
                ok = False
            if ok:
                backoff = 0.05
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    async def _poll_once(self, changed: asyncio.Event) -> bool:
        """One poll round; False if it failed (the caller backs off)."""
        table = [w for w in self._watches.values() if not w._paused]
        if not table:
            changed.clear()
            await changed.wait()
            return True
        # Rotate, so that when a reply is cut at its size bound, a different
        # watcher goes first next time.
        k = self._rotation % len(table)
        self._rotation += 1
        table = table[k:] + table[:k]
        sent = {w.id: (w.key, w.range_end, w._next, w.prev_kv, w.filters) for w in table}
        starting = any(w._ready is not None for w in table)
        changed.clear()
        poll = asyncio.ensure_future(self._client._route(
            "watch_poll", (sent, 0.0 if starting else POLL_WAIT_S), leader_only=True))
        self.stats["polls"] += 1
        joined = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait({poll, joined}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the hub is stopping: leave nothing pending behind
            poll.cancel()
            joined.cancel()
            await asyncio.gather(poll, joined, return_exceptions=True)
            raise
        finally:
            joined.cancel()
            if not poll.done():
                # A watcher joined (or resumed): ask again with it included.
                # The abandoned answer is dropped; no next_revision moved.
                poll.cancel()
                self.stats["cancelled_polls"] += 1
        if not poll.done():
            return True
        exc = poll.exception()
        if exc is None:
            self._apply(sent, poll.result())
            return True
        if isinstance(exc, ClientClosed):
            self._closed = True
            return True
        # Unavailable after the client's retries: keep the running watchers
        # (they resume where they were) and try again; watch() calls waiting
        # for their start get the error.
        self.stats["errors"] += 1
        log.warning("watch.poll_failed", cluster=self._client.name, watchers=len(sent), error=repr(exc))
        for w in table:
            if w._ready is not None:
                self._watches.pop(w.id, None)
                w._fail(exc)
                self._settle_ready(w, exc)
        return False

    def _apply(self, sent: dict[int, tuple], batch: Any) -> None:
        if not isinstance(batch, WatchBatch):
            log.error("watch.bad_reply", cluster=self._client.name, reply=type(batch).__name__)
            return
        self.stats["replies"] += 1
        for wid, spec in sent.items():
            w = self._watches.get(wid)
            if w is None or w._next != spec[2]:
                continue  # cancelled, or already moved on by another answer
            r = batch.results.get(wid)
            if r is None:
                continue
            if isinstance(r, BaseException):
                self._watches.pop(wid, None)
                w._fail(r)
                self._settle_ready(w, r)
                continue
            events, nxt = r
            if not _in_span(events, w._next, nxt):
                # Never deliver out of order or twice: drop it, poll again.
                log.error("watch.reply_out_of_span", watch=wid, next_revision=w._next, reply_next=nxt)
                continue
            w._next = nxt
            self.stats["events"] += len(events)
            w._push(tuple(events), nxt - 1)
            if not w._acked:
                w._acked = True
                self._settle_ready(w, None)


def _in_span(events: Any, start: int, end: int) -> bool:
    """Events are in revision order within [start, end), and end >= start."""
    if type(end) is not int or end < start:
        return False
    prev = start
    for ev in events:
        if not isinstance(ev, Event) or ev.revision < prev or ev.revision >= end:
            return False
        prev = ev.revision
    return True

