"""The leader's lease clocks: when leases run out, and checkpoints of what is left.

Theory of operation
-------------------
The state machine (`kv.leases`) knows each lease's TTL and how long it had
left when the log last said so; it never reads a clock. The leader's
`LeaseKeeper` holds the actual deadlines, on the replica's monotonic clock:

- on becoming leader, every lease's deadline is `now + remaining_ms`, the
  remaining TTL the log last recorded. That is never earlier than the old
  leader's deadline (the old leader recorded it at some time before now), so a
  healthy lease is not cut short by a leader change;
- a grant or renewal applied while leading sets `now + ttl`;
- every `checkpoint_s` the keeper proposes a `LeaseCheckpoint` of the leases
  whose recorded remaining TTL is more than one interval above the truth. So a
  new leader extends a lease by at most one interval plus the election time,
  and under leaders that keep changing a lease still runs down (etcd issue
  9888: without checkpoints each new leader granted a full TTL again, and
  leases of dead holders lived for ever);
- a deadline that has passed becomes a `LeaseExpire(id, epoch)` proposal,
  which the state machine applies as a revoke only if the lease was not
  renewed after the leader looked (`epoch` is the index of its last renewal).
  A proposal that does not commit (leadership lost) is re-proposed after a
  second by whoever leads.

Followers keep no deadlines; they hold the lease table through the log.
"""

from __future__ import annotations

import math
from typing import Any

from kv.leases import LeaseTable
from kv.requests import LeaseCheckpoint, LeaseExpire

__all__ = ["LeaseKeeper"]

CHECKPOINT_BATCH = 1000  # leases per checkpoint entry
REPROPOSE_S = 1.0


class LeaseKeeper:
    """Deadlines of every lease while this replica leads. Not thread-safe.

    Args:
        checkpoint_s: how often remaining TTLs are written to the log; also
            the most a lease can outlive its TTL per leader change (plus the
            election time).
    """

    def __init__(self, checkpoint_s: float = 0.5) -> None:
        self.checkpoint_s = checkpoint_s
        self.leading = False
        self._deadlines: dict[int, float] = {}
        self._recorded: dict[int, int] = {}  # remaining_ms as the log last said
        self._expiring: dict[int, float] = {}  # lease id -> when LeaseExpire was proposed
        self._next_checkpoint = 0.0
        # No expiry can be due before this: the leader's tick checks it
        # instead of scanning every lease (lowered whenever a deadline is set).
        self._scan_at = math.inf

    def become_leader(self, leases: LeaseTable, now: float) -> None:
        self.leading = True
        self._deadlines.clear()
        self._recorded.clear()
        self._expiring.clear()
        for lease_id in leases.ids():
            lease = leases.get(lease_id)
            assert lease is not None
            self._deadlines[lease_id] = now + lease.remaining_ms / 1000.0
            self._recorded[lease_id] = lease.remaining_ms
        self._next_checkpoint = now + self.checkpoint_s
        self._scan_at = min(self._deadlines.values(), default=math.inf)

    def step_down(self) -> None:
        self.leading = False
        self._deadlines.clear()
        self._recorded.clear()
        self._expiring.clear()

    def observe(self, leases: LeaseTable, now: float) -> None:
        """Take the state machine's lease events (drained from `leases.events`)."""
        events = leases.events
        if not events:
            return
        if self.leading:
            for kind, lease_id, ms in events:
                if kind == "set":
                    deadline = self._deadlines[lease_id] = now + ms / 1000.0
                    self._scan_at = min(self._scan_at, deadline)
                    self._recorded[lease_id] = ms
                    self._expiring.pop(lease_id, None)
                elif kind == "checkpoint":
                    deadline = self._deadlines.setdefault(lease_id, now + ms / 1000.0)
                    self._scan_at = min(self._scan_at, deadline)
                    self._recorded[lease_id] = ms
                elif kind == "gone":
                    self._deadlines.pop(lease_id, None)
                    self._recorded.pop(lease_id, None)
                    self._expiring.pop(lease_id, None)
                elif kind == "reset":  # restored from a snapshot
                    self.become_leader(leases, now)
        events.clear()

    def remaining_ms(self, lease_id: int, now: float) -> int | None:
        """Milliseconds left on the leader's clock (None if unknown or not leading)."""
        deadline = self._deadlines.get(lease_id)
        if deadline is None:
            return None
        return max(0, round((deadline - now) * 1000))

    def due(self, leases: LeaseTable, now: float) -> list[Any]:
        """The LeaseExpire and LeaseCheckpoint requests to propose now."""
        if not self.leading or not self._deadlines:
            return []
        ops: list[Any] = []
        expiring = self._expiring
        if now >= self._scan_at:
            scan_at = math.inf
            for lease_id, deadline in self._deadlines.items():
                if deadline <= now:
                    proposed = expiring.get(lease_id)
                    if proposed is None or now - proposed >= REPROPOSE_S:
                        lease = leases.get(lease_id)
                        if lease is not None:
                            ops.append(LeaseExpire(lease_id, lease.epoch))
                            expiring[lease_id] = proposed = now
                    if proposed is not None:
                        deadline = proposed + REPROPOSE_S  # when to propose it again
                scan_at = min(scan_at, deadline)
            self._scan_at = scan_at
        if now >= self._next_checkpoint:
            self._next_checkpoint = now + self.checkpoint_s
            slack = int(self.checkpoint_s * 1000)
            stale = []
            for lease_id, deadline in self._deadlines.items():
                left = max(0, round((deadline - now) * 1000))
                if self._recorded.get(lease_id, 0) - left >= slack and lease_id not in expiring:
                    lease = leases.get(lease_id)
                    if lease is not None:
                        stale.append((lease_id, left, lease.epoch))
            for i in range(0, len(stale), CHECKPOINT_BATCH):
                ops.append(LeaseCheckpoint(tuple(stale[i : i + CHECKPOINT_BATCH])))
        return ops
