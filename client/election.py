"""Leader election among your own workloads (etcd's election recipe).

    e = client.election("scheduler")
    e.campaign("worker-7")          # blocks until this caller leads
    ... lead; e.proclaim("worker-7 v2") to change the announced value ...
    e.resign()

Campaigners queue by create revision under a reserved prefix (see
`client.recipes`); the oldest key leads. Each campaigner's key lives on its
session lease, so a leader whose process dies is replaced once the lease
runs out (the TTL, by the cluster leader's clock).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator

from kv.errors import LockNotHeld, LockTimeout, NotElectionLeader
from kv.requests import Compare, DeleteRange, Put, prefix_end
from kv.responses import KeyValue
from client.recipes import SessionOwner, arun_on_loop, check_timeout, join_queue, queue_prefix, run_on_loop, wait_turn

if TYPE_CHECKING:
    from client.client import Client
    from client.leases import Session

__all__ = ["Election"]


class Election(SessionOwner):
    """One campaigner's handle on election `name`. Build it with `client.election(name)`.

    Attributes:
        name: the election's name.
        key, revision: this campaigner's key and its create revision while
            campaigning or leading (None otherwise); the revision doubles as a
            fencing token, strictly increasing across leaders.
    """

    def __init__(self, client: "Client", name: str, ttl: float = 10.0, session: "Session | None" = None) -> None:
        self.client = client
        self.name = name
        self.prefix = queue_prefix("election", name)
        self.ttl = ttl
        self._own_session = session is None
        self.session = session
        self.key: str | None = None
        self.revision: int | None = None
        self._won = False  # campaign returned: our key is the oldest

    def __repr__(self) -> str:
        return f"Election({self.name!r}, key={self.key!r})"

    # --- campaigning ------------------------------------------------------------------

    def campaign(self, value: Any, timeout: float | None = None) -> None:
        """Block until this caller leads, announcing `value` (bytes or str).

        Raises:
            LockTimeout: not elected within `timeout` seconds (the candidacy is withdrawn).
            LockNotHeld: the session's lease ended while waiting.
        """
        check_timeout(timeout)
        if self.session is None or self.session.lost:
            self.session = self.client.session(self.ttl)
            self._own_session = True
            self._forget_key()
        run_on_loop(self.client, self._campaign(value, timeout))

    async def acampaign(self, value: Any, timeout: float | None = None) -> None:
        check_timeout(timeout)
        if self.session is None or self.session.lost:
            self.session = await self.client.asession(self.ttl)
            self._own_session = True
            self._forget_key()
        await arun_on_loop(self.client, self._campaign(value, timeout))

    def _forget_key(self) -> None:
        """A new session: the old key went (or goes) with the old lease."""
        self.key = self.revision = None
        self._won = False

    def proclaim(self, value: Any) -> None:
        """Change the leader's announced value, only while leading.

        Raises:
            NotElectionLeader: this caller does not lead (never won, resigned, lease ended).
        """
        run_on_loop(self.client, self._proclaim(value))

    async def aproclaim(self, value: Any) -> None:
        await arun_on_loop(self.client, self._proclaim(value))

    def resign(self) -> None:
        """Stop leading (or campaigning); the next campaigner takes over. Idempotent.
        Closes the session this Election made for itself."""
        try:
            if self.key is not None:
                run_on_loop(self.client, self._resign())
        finally:
            self._drop_session()

    async def aresign(self) -> None:
        try:
            if self.key is not None:
                await arun_on_loop(self.client, self._resign())
        finally:
            await self._adrop_session()

    def is_leader(self) -> bool:
        """True while this caller's key is the leading one (a linearizable read)."""
        if self.key is None or not self._won:
            return False
        kv = self.client.get(self.key)
        return kv is not None and kv.create_revision == self.revision

    def fence(self) -> Compare:
        """The txn condition "this campaigner still leads" (see TxnBuilder.if_held)."""
        if self.key is None or self.revision is None or not self._won:
            raise NotElectionLeader(f"not leading election {self.name!r}")
        return Compare(self.key, "create", "==", self.revision)

    # --- observing --------------------------------------------------------------------------

    def leader(self) -> Any:
        """The current leader's value, or None if nobody leads."""
        kv = self.leader_kv()
        return None if kv is None else kv.value

    async def aleader(self) -> Any:
        kv = await self.aleader_kv()
        return None if kv is None else kv.value

    def leader_kv(self) -> KeyValue | None:
        """The leader's key-value (key, value, create revision = its token), or None."""
        r = self.client.get_range(self.prefix, prefix_end(self.prefix), sort_order="ascend",
                                  sort_target="create", limit=1)
        return r.kvs[0] if r.kvs else None

    async def aleader_kv(self) -> KeyValue | None:
        r = await self.client.aget_range(self.prefix, prefix_end(self.prefix), sort_order="ascend",
                                         sort_target="create", limit=1)
        return r.kvs[0] if r.kvs else None

    def observe(self) -> "Observer":
        """An iterator (and async iterator) of leader values: the current one
        first, then each change of leader or of its value; None when nobody
        leads. `cancel()` it when done."""
        return Observer(self)

    # --- on the client loop -------------------------------------------------------------

    async def _campaign(self, value: Any, timeout: float | None) -> None:
        assert self.session is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.key is None:
            self.key, self.revision = await join_queue(self.client, self.prefix, value, self.session)
        else:  # campaigning again on a live key: just update the value
            await self._proclaim(value, must_lead=False)
        try:
            await wait_turn(self.client, self.prefix, self.key, self.revision, self.session, deadline,
                            f"election {self.name!r}")
        except (LockTimeout, LockNotHeld, asyncio.CancelledError):
            await self._resign()
            raise
        self._won = True

    async def _proclaim(self, value: Any, must_lead: bool = True) -> None:
        if self.key is None or self.session is None or (must_lead and not self._won):
            raise NotElectionLeader(f"not leading election {self.name!r}; campaign first")
        r = await self.client.atxn([Compare(self.key, "create", "==", self.revision)],
                                   [Put(self.key, value, self.session.id)])
        if not r.succeeded:
            self.key = self.revision = None
            self._won = False
            raise NotElectionLeader(f"no longer leading election {self.name!r} (the session's lease ended)")

    async def _resign(self) -> None:
        key, rev = self.key, self.revision
        self.key = self.revision = None
        self._won = False
        try:
            await self.client.atxn([Compare(key, "create", "==", rev)], [DeleteRange(key)])
        except Exception:  # unreachable now: the lease's expiry deletes it
            pass


class Observer:
    """Leader changes of one election (see `Election.observe`)."""

    def __init__(self, election: Election) -> None:
        self.election = election
        self._watch: Any = None
        self._last: Any = ...
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True
        if self._watch is not None:
            self._watch.cancel()

    def __iter__(self) -> Iterator[Any]:
        e = self.election
        c = e.client
        prefix, end = e.prefix, prefix_end(e.prefix)
        if self._cancelled:
            return
        r = c.get_range(prefix, end, sort_order="ascend", sort_target="create", limit=1)
        self._watch = c.watch(prefix, start_revision=r.header.revision + 1, prefix=True)
        if self._cancelled:  # cancel() ran before the watch existed
            self._watch.cancel()
            return
        yield from self._changed(r)
        seen = 0
        for ev in self._watch:
            if self._cancelled:
                return
            if ev.mod_revision == seen:  # one look per revision
                continue
            seen = ev.mod_revision
            yield from self._changed(c.get_range(prefix, end, sort_order="ascend", sort_target="create",
                                                 limit=1, revision=ev.mod_revision))

    async def __aiter__(self) -> AsyncIterator[Any]:
        e = self.election
        c = e.client
        prefix, end = e.prefix, prefix_end(e.prefix)
        if self._cancelled:
            return
        r = await c.aget_range(prefix, end, sort_order="ascend", sort_target="create", limit=1)
        self._watch = await c.awatch(prefix, start_revision=r.header.revision + 1, prefix=True)
        if self._cancelled:  # cancel() ran before the watch existed
            self._watch.cancel()
            return
        for v in self._changed(r):
            yield v
        seen = 0
        async for ev in self._watch:
            if self._cancelled:
                return
            if ev.mod_revision == seen:
                continue
            seen = ev.mod_revision
            r = await c.aget_range(prefix, end, sort_order="ascend", sort_target="create", limit=1,
                                   revision=ev.mod_revision)
            for v in self._changed(r):
                yield v

    def _changed(self, r: Any) -> Iterator[Any]:
        """Yield the leader's value if the leader (key) or its value changed."""
        kv = r.kvs[0] if r.kvs else None
        state = None if kv is None else (kv.key, kv.value)
        if state != self._last:
            self._last = state
            yield None if kv is None else kv.value
