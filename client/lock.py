"""Distributed locks with fencing tokens.

    with client.lock("jobs/42", ttl=10) as lock:
        client.txn().if_held(lock).then(Put("jobs/42/owner", me)).commit()

Fair (first come, first served) and released automatically when the holder's
process dies: the lock key lives on a session lease that stops being renewed.
See `client.recipes` for how the queue works and why the fence is sound.

Why fencing matters: a lock in a distributed system can be lost without its
holder noticing. A process paused (GC, SIGSTOP, an overloaded machine) past
its lease's TTL wakes up still believing it holds the lock while another
process already does; Jepsen's analysis of etcd 3.4 showed exactly this, with
locks that therefore did not provide mutual exclusion for the work they
guarded. The lock cannot prevent the pause; the resource must refuse the
stale holder. Every acquisition gets a fencing token (the lock key's create
revision), strictly larger for every later holder of the same lock name.
Writes to raftkv made with `if_held(lock)` (or `lock.put`) are applied only
while the lock is still held; any other resource you guard should remember
the largest token it has seen and refuse smaller ones.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Sequence

from kv.errors import LockNotHeld
from kv.requests import Compare, DeleteRange, Put
from kv.responses import PutResponse, TxnResponse
from client.leases import ttl_ms
from client.recipes import SessionOwner, arun_on_loop, check_timeout, join_queue, queue_prefix, run_on_loop, wait_turn

if TYPE_CHECKING:
    from client.client import Client
    from client.leases import Session

__all__ = ["Lock"]


class Lock(SessionOwner):
    """A fair distributed lock. Build it with `client.lock(name, ttl, timeout)`.

    `with lock:` / `async with lock:` acquire and release; so do
    `acquire()` / `release()` and their async twins.

    Attributes:
        name: the lock's name.
        fencing_token: the create revision of this holder's lock key, set
            while held (None otherwise); strictly increasing per lock name.
        key: the holder's lock key (None until acquired).
    """

    def __init__(self, client: "Client", name: str, ttl: float = 10.0, timeout: float | None = None,
                 session: "Session | None" = None) -> None:
        self.client = client
        self.name = name
        self.prefix = queue_prefix("lock", name)
        ttl_ms(ttl)  # InvalidRequest now, not at acquire()
        check_timeout(timeout)
        self.ttl = ttl
        self.timeout = timeout
        self._own_session = session is None
        self.session = session
        self.key: str | None = None
        self.fencing_token: int | None = None

    def __repr__(self) -> str:
        return f"Lock({self.name!r}, token={self.fencing_token})"

    # --- acquire / release -------------------------------------------------------

    def acquire(self, timeout: float | None = ...) -> "Lock":  # type: ignore[assignment]
        """Wait (up to `timeout` seconds; default: the lock's timeout, None =
        for ever) until this caller holds the lock, in arrival order.

        Raises:
            LockTimeout: not acquired in time (our place in the queue is given up).
            LockNotHeld: the session's lease ended while waiting.
        """
        if self.fencing_token is not None:
            raise LockNotHeld(f"lock {self.name!r} is already held by this Lock object; release it first")
        timeout = self.timeout if timeout is ... else timeout
        check_timeout(timeout)
        if self.session is None:
            self.session = self.client.session(self.ttl)
        try:
            return run_on_loop(self.client, self._acquire(timeout))
        except BaseException:
            self._drop_session()  # not acquired: stop renewing a lease nobody will use
            raise

    async def aacquire(self, timeout: float | None = ...) -> "Lock":  # type: ignore[assignment]
        if self.fencing_token is not None:
            raise LockNotHeld(f"lock {self.name!r} is already held by this Lock object; release it first")
        timeout = self.timeout if timeout is ... else timeout
        check_timeout(timeout)
        if self.session is None:
            self.session = await self.client.asession(self.ttl)
        try:
            return await arun_on_loop(self.client, self._acquire(timeout))
        except BaseException:
            await self._adrop_session(quiet=True)  # not acquired: stop renewing
            raise

    def release(self) -> None:
        """Give the lock up (delete our key); the next waiter gets it. Idempotent."""
        try:
            if self.key is not None:
                run_on_loop(self.client, self._release())
        finally:
            self._drop_session()

    async def arelease(self) -> None:
        try:
            if self.key is not None:
                await arun_on_loop(self.client, self._release())
        finally:
            await self._adrop_session()

    def is_held(self) -> bool:
        """True if our key still exists with our token (a linearizable read)."""
        if self.key is None:
            return False
        kv = self.client.get(self.key)
        return kv is not None and kv.create_revision == self.fencing_token

    async def ais_held(self) -> bool:
        if self.key is None:
            return False
        kv = await self.client.aget(self.key)
        return kv is not None and kv.create_revision == self.fencing_token

    # --- fenced writes -------------------------------------------------------------

    def fence(self) -> Compare:
        """The txn condition "this lock is still held by us"."""
        if self.key is None or self.fencing_token is None:
            raise LockNotHeld(f"lock {self.name!r} is not held; acquire it first")
        return Compare(self.key, "create", "==", self.fencing_token)

    def put(self, key: Any, value: Any, **options: Any) -> PutResponse:
        """Put only while holding the lock.

        Raises:
            LockNotHeld: the lock was lost (e.g. paused past the TTL); nothing was written.
        """
        r = self.txn([Put(key, value, **options)])
        return r.responses[0]

    def txn(self, success: Sequence[Any], failure: Sequence[Any] = ()) -> TxnResponse:
        """Run `success` atomically only while holding the lock.

        Raises:
            LockNotHeld: the lock was lost; `failure` ran instead (if given) and
                its results are in the exception's `response`.
        """
        r = self.client.txn([self.fence()], list(success), list(failure))
        if not r.succeeded:
            exc = LockNotHeld(f"lock {self.name!r} is no longer held (token {self.fencing_token}); "
                              "the write was refused")
            exc.response = r  # type: ignore[attr-defined]
            raise exc
        return r

    # --- context managers ----------------------------------------------------------

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> "Lock":
        return await self.aacquire()

    async def __aexit__(self, *exc: object) -> None:
        await self.arelease()

    # --- on the client loop -----------------------------------------------------------

    async def _acquire(self, timeout: float | None) -> "Lock":
        assert self.session is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        key, token = await join_queue(self.client, self.prefix, "", self.session)
        try:
            await wait_turn(self.client, self.prefix, key, token, self.session, deadline, f"lock {self.name!r}")
        except BaseException:
            await self._delete_quietly(key, token)
            raise
        self.key, self.fencing_token = key, token
        return self

    async def _release(self) -> None:
        key, token = self.key, self.fencing_token
        self.key = self.fencing_token = None
        await self._delete_quietly(key, token)

    async def _delete_quietly(self, key: Any, token: Any) -> None:
        try:
            await self.client.atxn([Compare(key, "create", "==", token)], [DeleteRange(key)])
        except Exception:  # unreachable now: the lease's expiry deletes it
            pass

