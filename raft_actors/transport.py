"""Sending Raft messages between replica actors, with fault injection.

Each replica owns one `Transport`. `send(messages)` groups a Ready's messages
by destination and makes one fire-and-forget actor call per peer, so a Ready
costs at most one Ray call per peer however many messages it holds. Delivery
errors (a dead or restarting peer) are swallowed: Raft retries on its own.

Fault injection (used by tests and the chaos tooling): `block(peers)` cuts
this replica off from some peers in both directions (a partition is set by
blocking on every replica), `drop_rate` loses a fraction of messages, and
`delay` holds messages back before sending.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import Any, Callable, Iterable

import structlog

from raft_actors.types import Message

log = structlog.get_logger(__name__)

RESOLVE_INTERVAL_S = 0.1


class Transport:
    """Actor-handle transport for one replica. See the module docstring.

    Args:
        self_id: this replica's id.
        resolve: returns the actor handle of a peer id, or None if unknown.
        rng: randomness for the drop fault.
    """

    def __init__(self, self_id: int, resolve: Callable[[int], Any], rng: random.Random | None = None) -> None:
        self.self_id = self_id
        self._resolve = resolve
        self._handles: dict[int, Any] = {}
        self._resolving: set[int] = set()
        self._waiting: dict[int, list[Message]] = {}
        self._last_resolve: dict[int, float] = {}
        self.blocked: set[int] = set()
        self.blocked_in: set[int] = set()
        self.drop_rate = 0.0
        self.delay = 0.0
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task] = set()
        self.sent_calls = 0

    # -- fault injection -------------------------------------------------
    def set_faults(self, blocked: Iterable[int] = (), drop_rate: float = 0.0, delay: float = 0.0,
                   blocked_in: Iterable[int] | None = None) -> None:
        """Cut sending to peers `blocked` and receiving from `blocked_in`
        (default: the same peers, a symmetric cut); lose a fraction of
        messages; hold messages back by `delay` seconds."""
        self.blocked = set(blocked)
        self.blocked_in = set(self.blocked if blocked_in is None else blocked_in)
        self.drop_rate = float(drop_rate)
        self.delay = float(delay)

    def accepts(self, src: int) -> bool:
        """Whether a message from `src` gets through."""
        return src not in self.blocked_in

    def forget(self, peer: int) -> None:
        """Drop a cached handle (the peer was restarted as a new actor)."""
        self._handles.pop(peer, None)

    # -- sending -----------------------------------------------------------
    def send(self, messages: list[Message]) -> None:
        by_peer: dict[int, list[Message]] = defaultdict(list)
        for m in messages:
            if m.dst in self.blocked:
                continue
            if self.drop_rate and self._rng.random() < self.drop_rate:
                continue
            by_peer[m.dst].append(m)
        for peer, batch in by_peer.items():
            if self.delay:
                task = asyncio.get_running_loop().create_task(self._deliver_later(peer, batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                self._deliver(peer, batch)

    async def _deliver_later(self, peer: int, batch: list[Message]) -> None:
        await asyncio.sleep(self.delay)
        self._deliver(peer, batch)

    def _deliver(self, peer: int, batch: list[Message]) -> None:
        handle = self._handles.get(peer)
        if handle is None:
            # Looking a peer up asks Ray's control service: never on the event
            # loop, at most one lookup in flight per peer, and not more often
            # than RESOLVE_INTERVAL_S. The newest batch waits for the lookup;
            # older ones are dropped (Raft resends what matters).
            self._waiting[peer] = batch
            self._start_resolve(peer)
            return
        self.sent_calls += 1
        try:
            ref = handle.receive.remote(self.self_id, batch)
        except Exception as exc:
            self._send_failed(peer, exc)
            return
        # Fire and forget; the callback only notices a dead peer. (Awaiting the
        # ObjectRef itself costs about twice the round trip of its future.)
        loop = asyncio.get_running_loop()

        def done(f: Any, p: int = peer) -> None:  # runs on a Ray thread
            exc = f.exception()
            if exc is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._send_failed, p, exc)

        ref.future().add_done_callback(done)

    def _start_resolve(self, peer: int) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if peer in self._resolving or now - self._last_resolve.get(peer, -1e9) < RESOLVE_INTERVAL_S:
            return
        self._resolving.add(peer)
        self._last_resolve[peer] = now

        def found(fut: asyncio.Future) -> None:
            self._resolving.discard(peer)
            handle = None if fut.cancelled() or fut.exception() else fut.result()
            waiting = self._waiting.pop(peer, None)
            if handle is not None:
                self._handles[peer] = handle
                if waiting is not None:
                    self._deliver(peer, waiting)

        loop.run_in_executor(None, self._resolve, peer).add_done_callback(found)

    def _send_failed(self, peer: int, exc: BaseException) -> None:
        # A dead, restarting or unreachable peer: Raft retries on its own; look
        # the handle up again next time (a restarted replica is a new actor).
        self._handles.pop(peer, None)
        log.debug("transport.send_failed", replica=self.self_id, peer=peer, error=type(exc).__name__)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        self._tasks.clear()
