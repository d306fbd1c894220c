"""What locks and elections share: a fair queue of keys under a prefix.

Theory of operation (etcd's concurrency recipes, re-derived)
-----------------------------------------------------------
Each contender writes one key under the prefix, attached to its session's
lease. The store gives every key a create revision, strictly increasing in
the order the writes committed, and a key's create revision never changes
while it exists. So the keys, ordered by create revision, form a queue:
the contender whose key is oldest holds the lock (or leads the election).

A contender waits for its turn by watching only the key just ahead of it
(the newest key with a lower create revision) until that key is deleted,
then looks again; so a release wakes one waiter, not the whole queue. A key
ahead of us can disappear (released, its holder's lease expired), but no key
can ever join ahead of us: create revisions only grow. So once our key is
the oldest, it stays the oldest for as long as it exists, and "our key still
exists with our create revision" is exactly "we still hold it". That
comparison is the fence: a write made in a txn guarded by
`create_revision(our key) == token` cannot land after we lost the lock, and
the token (our create revision) is strictly larger for every later holder.

Everything here runs on the client's loop thread; the sync and async public
methods of Lock and Election both drive these coroutines there.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Awaitable, TypeVar

from kv.errors import InvalidRequest, LockNotHeld, LockTimeout
from kv.requests import Compare, Put, Range, prefix_end

if TYPE_CHECKING:
    from client.client import Client
    from client.leases import Session

__all__ = ["queue_prefix", "join_queue", "wait_turn", "run_on_loop", "arun_on_loop", "check_timeout", "SessionOwner"]

T = TypeVar("T")

RESERVED = "__raftkv/"


def queue_prefix(kind: str, name: Any) -> str:
    """The reserved key prefix of lock or election `name`."""
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{kind} name must be a non-empty str, got {name!r}")
    return f"{RESERVED}{kind}/{name}/"


async def join_queue(client: "Client", prefix: str, value: Any, session: "Session") -> tuple[str, int]:
    """Write our key (attached to the session's lease); return (key, create revision)."""
    key = f"{prefix}{session.id:016x}-{uuid.uuid4().hex[:8]}"
    r = await client.atxn([Compare(key, "create", "==", 0)], [Put(key, value, session.id)],
                          [Range(key)])
    if r.succeeded:
        return key, r.header.revision
    return key, r.responses[0].kvs[0].create_revision  # a retried write that had landed


async def wait_turn(client: "Client", prefix: str, key: str, token: int, session: "Session",
                    deadline: float | None, what: str) -> None:
    """Return once `key` (created at `token`) is the oldest key under prefix.

    Raises:
        LockTimeout: `deadline` (monotonic) passed first.
        LockNotHeld: our key vanished (the session's lease ended).
    """
    end = prefix_end(prefix)
    while True:
        resp = await client.aget_range(prefix, end, sort_order="ascend", sort_target="create")
        ahead = [kv for kv in resp.kvs if kv.create_revision < token]
        if not any(kv.key == key and kv.create_revision == token for kv in resp.kvs):
            raise LockNotHeld(f"{what}: our queue key {key!r} is gone (the session's lease ended)")
        if not ahead:
            return
        await _wait_deleted(client, ahead[-1].key, resp.header.revision + 1, session, deadline, what)


async def _wait_deleted(client: "Client", key: Any, from_revision: int, session: "Session",
                        deadline: float | None, what: str) -> None:
    watch = await client.awatch(key, start_revision=from_revision, filters=("noput",))
    lost = asyncio.get_running_loop().create_future()

    def on_lost(_: Any) -> None:
        if not lost.done():
            lost.get_loop().call_soon_threadsafe(lambda: lost.done() or lost.set_result(None))

    unregister = session.on_lost(on_lost)

    async def deleted() -> None:
        async for ev in watch:
            if ev.type == "delete":
                return

    waiter = asyncio.ensure_future(deleted())
    try:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        done, _ = await asyncio.wait({waiter, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            waiter.result()  # a watch error (e.g. Compacted) surfaces here
            return
        if lost in done:
            raise LockNotHeld(f"{what}: the session's lease ended while waiting")
        raise LockTimeout(f"{what}: not acquired within the timeout")
    finally:
        unregister()
        waiter.cancel()
        watch.cancel()


class SessionOwner:
    """What Lock and Election share: a session, which they close only if
    they made it themselves (`_own_session`)."""

    client: "Client"
    session: "Session | None"
    _own_session: bool

    def _drop_session(self) -> None:
        if self._own_session and self.session is not None:
            session, self.session = self.session, None
            session.close()

    async def _adrop_session(self, quiet: bool = False) -> None:
        """The async twin; `quiet`: a closed client is no error (the TTL ends the lease)."""
        if self._own_session and self.session is not None:
            session, self.session = self.session, None
            try:
                await arun_on_loop(self.client, session.aclose())
            except Exception:
                if not quiet:
                    raise


def check_timeout(timeout: Any) -> None:
    """Raises InvalidRequest unless timeout is None or a number of seconds >= 0."""
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout >= 0):
        raise InvalidRequest(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")


def run_on_loop(client: "Client", coro: Awaitable[T]) -> T:
    """Run a recipe coroutine on the client's loop from a user thread.

    Raises:
        InvalidRequest: called on the client's loop thread (it would deadlock).
    """
    client._check_open()
    if threading.current_thread() is client._thread:
        coro.close()  # type: ignore[attr-defined]
        raise InvalidRequest("a blocking lock or election call on the client's own loop thread (e.g. in "
                             "a Session.on_lost callback) would deadlock; use its async form there")
    return asyncio.run_coroutine_threadsafe(coro, client._loop).result()  # type: ignore[arg-type]


async def arun_on_loop(client: "Client", coro: Awaitable[T]) -> T:
    """Run a recipe coroutine on the client's loop from the caller's event loop."""
    client._check_open()
    fut = asyncio.run_coroutine_threadsafe(coro, client._loop)  # type: ignore[arg-type]
    return await asyncio.wrap_future(fut)
