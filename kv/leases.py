"""The lease table of the replicated state machine.

Theory of operation
-------------------
A lease is a time to live that keys can be attached to; when it ends (revoked
by a client, or expired) every attached key is deleted in one revision.

Time never enters this module: the state machine must be deterministic. A
lease records its granted TTL and `remaining_ms`, how long it had left when
the log last said so (its grant, its last renewal, or the leader's last
checkpoint), plus `epoch`, the log index of its last grant or renewal. The
leader keeps the actual deadlines on its own monotonic clock
(`raft_actors.leases.LeaseKeeper`); when one passes it proposes a
`LeaseExpire(id, epoch)`, which is applied as a revoke only if the lease was
not renewed after the leader decided. A new leader starts every deadline at
`now + remaining_ms`: never earlier than the old leader would have (no early
expiry), and at most one checkpoint interval later (no lease lives forever
under changing leaders).

Attached keys are not stored in snapshots: they are rebuilt from the MVCC
store's lease fields on restore.

`events` lists what the leader's keeper must hear about, in apply order:
("set", id, ms) after a grant or renewal, ("checkpoint", id, ms), and
("gone", id, 0). It is a side channel, drained by the replica, not state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kv.errors import InvalidRequest, LeaseExists, LeaseNotFound

__all__ = ["Lease", "LeaseTable", "MAX_LEASE_ID"]

MAX_LEASE_ID = 2**63 - 1  # ids must fit a signed 64-bit int


@dataclass(slots=True)
class Lease:
    """One lease. `keys` are the stored keys attached to it."""

    id: int
    ttl_ms: int
    remaining_ms: int
    epoch: int
    keys: set[bytes] = field(default_factory=set)


class LeaseTable:
    """Leases by id, with the keys attached to each. Deterministic."""

    def __init__(self) -> None:
        self._leases: dict[int, Lease] = {}
        # invariant: every automatically assigned id is >= _next_id's past values
        self._next_id = 1
        self.events: list[tuple[str, int, int]] = []

    def __len__(self) -> int:
        return len(self._leases)

    def __contains__(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def get(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    def require(self, lease_id: int) -> Lease:
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFound(f"lease {lease_id} does not exist (never granted, expired or revoked)")
        return lease

    def ids(self) -> list[int]:
        return sorted(self._leases)

    def grant(self, ttl_ms: int, lease_id: int, index: int) -> Lease:
        """Create a lease; `lease_id` 0 picks the next free id.

        Raises:
            LeaseExists: lease_id is taken.
        """
        if lease_id:
            if lease_id in self._leases:
                raise LeaseExists(f"lease {lease_id} already exists; grant with id 0 for a fresh one")
            self._next_id = max(self._next_id, lease_id + 1)
        else:
            # Counting up; past the largest id (after a huge explicit one),
            # from the bottom again, skipping ids in use.
            lease_id = self._next_id if self._next_id < MAX_LEASE_ID else 1
            while lease_id in self._leases:
                lease_id = lease_id + 1 if lease_id < MAX_LEASE_ID else 1
            self._next_id = lease_id + 1
        lease = Lease(lease_id, ttl_ms, ttl_ms, index)
        self._leases[lease_id] = lease
        self.events.append(("set", lease_id, ttl_ms))
        return lease

    def renew(self, lease_id: int, index: int) -> Lease:
        """Restart a lease's TTL. Raises LeaseNotFound."""
        lease = self.require(lease_id)
        lease.remaining_ms = lease.ttl_ms
        lease.epoch = index
        self.events.append(("set", lease_id, lease.ttl_ms))
        return lease

    def checkpoint(self, remaining: tuple[tuple[int, int, int], ...]) -> int:
        """Record remaining TTLs. Skipped: unknown ids, and leases renewed
        after the leader computed the value (epoch differs: the renewal,
        applied first, is newer). Returns how many were recorded."""
        n = 0
        for lease_id, ms, epoch in remaining:
            lease = self._leases.get(lease_id)
            if lease is not None and lease.epoch == epoch:
                lease.remaining_ms = min(ms, lease.ttl_ms)
                self.events.append(("checkpoint", lease_id, lease.remaining_ms))
                n += 1
        return n

    def remove(self, lease_id: int) -> Lease:
        """Forget a lease; returns it with its keys. Raises LeaseNotFound."""
        lease = self.require(lease_id)
        del self._leases[lease_id]
        self.events.append(("gone", lease_id, 0))
        return lease

    def attach(self, lease_id: int, key: bytes) -> None:
        self._leases[lease_id].keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)

    # --- snapshot -----------------------------------------------------------------

    def to_plain(self) -> list[Any]:
        flat: list[int] = []
        for lease_id in sorted(self._leases):
            lease = self._leases[lease_id]
            flat.extend((lease.id, lease.ttl_ms, lease.remaining_ms, lease.epoch))
        return [self._next_id, flat]

    @classmethod
    def from_plain(cls, plain: Any, attached: list[tuple[bytes, int]]) -> LeaseTable:
        """Rebuild from `to_plain()` and the store's (key, lease id) pairs.

        Raises:
            InvalidRequest: malformed plain form, or a key attached to a lease
                that does not exist.
        """
        table = cls()
        try:
            next_id, flat = plain
            if type(next_id) is not int or type(flat) is not list or len(flat) % 4:
                raise InvalidRequest("malformed lease table in snapshot")
            table._next_id = next_id
            for i in range(0, len(flat), 4):
                lease_id, ttl_ms, remaining_ms, epoch = flat[i : i + 4]
                table._leases[lease_id] = Lease(lease_id, ttl_ms, remaining_ms, epoch)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidRequest):
                raise
            raise InvalidRequest(f"malformed lease table in snapshot: {exc}") from None
        for key, lease_id in attached:
            lease = table._leases.get(lease_id)
            if lease is None:
                raise InvalidRequest(f"snapshot has key {key!r} attached to unknown lease {lease_id}")
            lease.keys.add(key)
        return table
