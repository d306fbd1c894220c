"""Leases and sessions on the client side.

A `Lease` is a handle on a lease the cluster granted: refresh it, revoke it,
ask how long it has left. Nothing renews it for you.

A `Session` is a lease kept alive by the client in the background (on the
client's loop thread), renewed every third of its TTL. It is what locks and
elections stand on: if the process holding it dies, the renewals stop, the
leader's clock runs the lease out, and every key attached to it is deleted.

A session counts itself lost, conservatively, once a full TTL has passed since
the last renewal the cluster confirmed (measured from when that renewal was
*sent*), or when the cluster says the lease is gone. `Session.lost` then
holds, and callbacks registered with `on_lost` run (on the client's loop
thread: keep them short).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import structlog

from kv.errors import ClientClosed, InvalidRequest, LeaseNotFound, RaftKVError

if TYPE_CHECKING:
    from client.client import Client

__all__ = ["Lease", "LeaseStatus", "Session"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    """A lease as the leader sees it.

    Attributes:
        id: the lease id.
        ttl: granted time to live, seconds.
        remaining: seconds left on the leader's clock.
        keys: attached keys (bytes), when asked for.
    """

    id: int
    ttl: float
    remaining: float
    keys: tuple[bytes, ...] = ()


class Lease:
    """A granted lease. Build it with `client.lease(ttl)`.

    Usable as `put(..., lease=lease)` (or its `.id`), and as a context
    manager that revokes it on exit.
    """

    __slots__ = ("client", "id", "ttl")

    def __init__(self, client: "Client", lease_id: int, ttl: float) -> None:
        self.client = client
        self.id = lease_id
        self.ttl = ttl

    def __int__(self) -> int:
        return self.id

    __index__ = __int__

    def __repr__(self) -> str:
        return f"Lease(id={self.id}, ttl={self.ttl:g})"

    def refresh(self) -> float:
        """Renew: the lease lives `ttl` seconds from now. Returns the TTL.

        Raises:
            LeaseNotFound: it expired or was revoked.
        """
        return self.client.lease_keepalive(self.id)

    async def arefresh(self) -> float:
        return await self.client.alease_keepalive(self.id)

    def revoke(self) -> int:
        """End the lease now; its keys are deleted. Returns how many.

        Raises:
            LeaseNotFound: it had already ended.
        """
        return self.client.lease_revoke(self.id)

    async def arevoke(self) -> int:
        return await self.client.alease_revoke(self.id)

    def remaining_ttl(self) -> float:
        """Seconds left, on the leader's clock. Raises LeaseNotFound if gone."""
        return self.client.lease_time_to_live(self.id).remaining

    async def aremaining_ttl(self) -> float:
        return (await self.client.alease_time_to_live(self.id)).remaining

    def time_to_live(self, keys: bool = False) -> LeaseStatus:
        """TTL, time left and (with keys=True) the attached keys."""
        return self.client.lease_time_to_live(self.id, keys=keys)

    def keys(self) -> list[bytes]:
        return list(self.client.lease_time_to_live(self.id, keys=True).keys)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.revoke()
        except LeaseNotFound:
            pass


class Session:
    """A lease renewed in the background until `close()`. Build it with
    `client.session(ttl)`; use it as a context manager.

    Attributes:
        lease: the Lease.
        ttl: its granted TTL in seconds.
    """

    def __init__(self, client: "Client", lease: Lease, granted_at: float) -> None:
        """Use `client.session(ttl)` (or `Session.create` / `Session.acreate`)."""
        self.client = client
        self.lease = lease
        self.ttl = lease.ttl
        self._valid_until = granted_at + self.ttl  # by this process's clock, conservative
        self._lost = threading.Event()
        self._closed = False
        self._callbacks: list[Callable[["Session"], Any]] = []
        self._task = asyncio.run_coroutine_threadsafe(self._keepalive(), client._loop)

    @classmethod
    def create(cls, client: "Client", ttl: float = 10.0) -> "Session":
        sent = time.monotonic()
        return cls(client, client.lease(ttl), sent)

    @classmethod
    async def acreate(cls, client: "Client", ttl: float = 10.0) -> "Session":
        sent = time.monotonic()
        return cls(client, await client.alease(ttl), sent)

    @property
    def id(self) -> int:
        return self.lease.id

    @property
    def lost(self) -> bool:
        """True once the lease is known or presumed gone (also by this
        process's clock alone: a TTL passed since the last confirmed renewal)."""
        return self._lost.is_set() or time.monotonic() >= self._valid_until

    def remaining(self) -> float:
        """Seconds this process can still count on the lease (0 once lost)."""
        return 0.0 if self.lost else max(0.0, self._valid_until - time.monotonic())

    def on_lost(self, callback: Callable[["Session"], Any]) -> Callable[[], None]:
        """Call `callback(session)` once the lease is lost (at once if it
        already is). Returns a function that unregisters it."""
        self._callbacks.append(callback)
        if self._lost.is_set():  # else _mark_lost will call it
            self._run_callback(callback)

        def unregister() -> None:
            try:
                self._callbacks.remove(callback)
            except ValueError:
                pass

        return unregister

    def wait_lost(self, timeout: float | None = None) -> bool:
        return self._lost.wait(timeout)

    def close(self, revoke: bool = True) -> None:
        """Stop renewing and (by default) revoke the lease, deleting its keys. Idempotent."""
        if self._stop_renewing(revoke):
            with self._revoke_errors():
                self.lease.revoke()
        self._mark_lost("closed")

    async def aclose(self, revoke: bool = True) -> None:
        if self._stop_renewing(revoke):
            with self._revoke_errors():
                await self.lease.arevoke()
        self._mark_lost("closed")

    def _stop_renewing(self, revoke: bool) -> bool:
        """Stop the keep-alive (first call only); True if the lease should be revoked now."""
        if self._closed:
            return False
        self._closed = True
        self._task.cancel()
        return revoke and not self.lost

    @contextlib.contextmanager
    def _revoke_errors(self) -> Iterator[None]:
        try:
            yield
        except (LeaseNotFound, ClientClosed):
            pass
        except RaftKVError as exc:  # unreachable cluster: the TTL will end it
            log.warning("session.revoke_failed", lease=self.id, error=str(exc))

    async def __aenter__(self) -> "Session":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Session(lease={self.id}, ttl={self.ttl:g}, lost={self.lost})"

    async def _keepalive(self) -> None:
        interval = self.ttl / 3.0
        next_at = time.monotonic() + interval
        try:
            while not self._closed:
                delay = min(next_at, self._valid_until) - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.monotonic()
                if now >= self._valid_until:
                    self._mark_lost("not renewed within its TTL")
                    return
                try:
                    # Bounded by the TTL: the client's own retries may take longer.
                    await asyncio.wait_for(self.client.alease_keepalive(self.id), self._valid_until - now)
                except asyncio.TimeoutError:
                    self._mark_lost("not renewed within its TTL")
                    return
                except LeaseNotFound:
                    self._mark_lost("the cluster ended it")
                    return
                except ClientClosed:
                    self._mark_lost("the client was closed")
                    return
                except RaftKVError as exc:  # no leader right now: retry soon
                    log.info("session.keepalive_retry", lease=self.id, error=str(exc))
                    next_at = time.monotonic() + min(interval, 0.5)
                    continue
                self._valid_until = now + self.ttl
                next_at = now + interval
        except asyncio.CancelledError:
            if not self._closed:  # the client's close() cancelled us: nothing renews it now
                self._mark_lost("the client was closed")

    def _mark_lost(self, why: str) -> None:
        if self._lost.is_set():
            return
        if why != "closed":
            log.warning("session.lost", lease=self.id, reason=why)
        self._lost.set()
        for cb in list(self._callbacks):
            self._run_callback(cb)

    def _run_callback(self, cb: Callable[["Session"], Any]) -> None:
        try:
            cb(self)
        except Exception:
            log.exception("session.callback_failed", lease=self.id)


def ttl_ms(ttl: Any) -> int:
    """A TTL in seconds (int or float) as whole milliseconds, checked."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0 or ttl != ttl:
        raise InvalidRequest(f"ttl must be a positive number of seconds, got {ttl!r}")
    return max(1, int(round(ttl * 1000)))
