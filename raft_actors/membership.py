"""Cluster membership: who votes, who only listens, and how a change is written down.

A configuration (`Membership`) is a set of voters and a set of learners,
replica ids both, disjoint. Voters elect leaders and make up the quorums that
commit entries and confirm reads; learners receive the log (appends and
snapshots) and count for nothing. A new replica joins as a learner, catches
up, and is then promoted (Raft dissertation §4.2.1: a server with an empty log
would otherwise stall commits while it catches up).

Changes go through the log, one server at a time (dissertation §4.1): a
`ConfChange` is `add_learner(id)`, `promote(id)` or `remove(id)`, and the log
entry that carries it (kind `EntryKind.CONF`) also carries the whole
configuration that results, so the configuration at any log position is the
one in the last CONF entry at or before it (or the snapshot's, or the initial
one). The encoding is explicit and versioned; nothing is pickled::

    CONF entry data:   version u8 (=1) | change type u8 | replica id u64 | membership
    membership:        voter count u16 | learner count u16 | voter ids u64... | learner ids u64...

(little-endian; ids sorted ascending). Snapshot files and the snapshot
position file embed the same membership encoding.

A brand-new cluster's log starts with its configuration written down: the
first leader's no-op is a CONF entry of type `BOOTSTRAP` recording the
initial configuration (`Config.peers`), instead of an empty entry. So a
replica that joins later and receives the log from index 1 learns the
configuration from the log itself, not from its own (empty) settings.

`ConfChangeRefused` is what a leader raises for a change it will not append;
its `reason` says which rule refused it (see `Refusal`).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from kv.errors import NotLeader, RaftKVError

__all__ = [
    "ConfChange", "ConfChangeEntry", "ConfChangeNotLeader", "ConfChangeRefused", "ConfChangeType", "Membership",
    "Refusal", "decode_conf_entry", "encode_conf_entry",
]

CONF_ENTRY_VERSION = 1
_COUNTS = struct.Struct("<HH")
_ENTRY_HEAD = struct.Struct("<BBQ")
_ID = struct.Struct("<Q")
_MAX_ID = 2**64 - 1


class Refusal(enum.StrEnum):
    """Why a configuration change was refused (`ConfChangeRefused.reason`)."""

    NOT_LEADER = "not_leader"  # propose to the leader (see leader_hint)
    TRANSFERRING = "transferring"  # leadership is moving; retry with the new leader
    TERM_NOT_COMMITTED = "term_not_committed"  # a new leader has not committed an entry of its term yet; retry
    PENDING = "pending"  # an earlier change is not committed yet; retry once it is
    NOT_LEARNER = "not_learner"  # only a learner can be promoted
    ALREADY_MEMBER = "already_member"  # add_learner of a voter or learner
    NOT_MEMBER = "not_member"  # promote/remove of an id that is not in the configuration
    LAST_VOTER = "last_voter"  # a configuration needs at least one voter
    WOULD_LOSE_QUORUM = "would_lose_quorum"  # too few responsive voters would remain for the new quorum
    LEARNER_BEHIND = "learner_behind"  # the learner has not caught up; retry later
    ID_USED = "id_used"  # add_learner of an id that was a member before: ids are never reused
    INVALID = "invalid"  # a malformed change (bad id or type)


class ConfChangeRefused(RaftKVError, ValueError):
    """A configuration change was not appended; nothing changed.

    Attributes:
        reason: a `Refusal` naming the rule that refused it. `PENDING`,
            `TERM_NOT_COMMITTED`, `LEARNER_BEHIND`, `WOULD_LOSE_QUORUM` and
            `TRANSFERRING` are transient: retry later. The others are not.
        leader_hint: for `NOT_LEADER` and `TRANSFERRING`, the replica to ask
            instead (0: unknown).
    """

    def __init__(self, message: str, reason: Refusal = Refusal.INVALID, leader_hint: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.leader_hint = leader_hint


class ConfChangeNotLeader(ConfChangeRefused, NotLeader):
    """Refused because this replica is not the leader (or is handing leadership
    over): also a `NotLeader`, so code that reroutes on `NotLeader` reroutes it."""


class ConfChangeType(enum.IntEnum):
    """Kinds of change. Values are part of the on-disk format."""

    ADD_LEARNER = 1
    PROMOTE = 2
    REMOVE = 3
    BOOTSTRAP = 4  # no change: records the initial configuration (node_id 0); never proposed


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One membership change, of one replica."""

    type: ConfChangeType
    node_id: int

    @classmethod
    def add_learner(cls, node_id: int) -> ConfChange:
        """Add a new replica as a learner (it receives the log, does not vote)."""
        return cls(ConfChangeType.ADD_LEARNER, node_id)

    @classmethod
    def promote(cls, node_id: int) -> ConfChange:
        """Make a learner a voter."""
        return cls(ConfChangeType.PROMOTE, node_id)

    @classmethod
    def remove(cls, node_id: int) -> ConfChange:
        """Remove a voter or a learner."""
        return cls(ConfChangeType.REMOVE, node_id)


@dataclass(frozen=True, slots=True)
class Membership:
    """A configuration: voters and learners (sorted, disjoint, positive ids).

    The empty configuration is what a joining replica starts with: it knows no
    voters, so it never campaigns, and waits for a leader to contact it.
    """

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        voters, learners = tuple(sorted(self.voters)), tuple(sorted(self.learners))
        object.__setattr__(self, "voters", voters)
        object.__setattr__(self, "learners", learners)
        ids = voters + learners
        if len(set(ids)) != len(ids):
            raise ValueError(f"a replica id appears twice in voters {voters} / learners {learners}")
        if any(not 0 < i <= _MAX_ID for i in ids):
            raise ValueError(f"replica ids are positive 64-bit integers: {ids}")

    @property
    def members(self) -> tuple[int, ...]:
        """Voters and learners, sorted."""
        return tuple(sorted(self.voters + self.learners))

    @property
    def quorum(self) -> int:
        """Votes (or acknowledgements) needed: a majority of the voters."""
        return len(self.voters) // 2 + 1

    def is_voter(self, node_id: int) -> bool:
        return node_id in self.voters

    def is_learner(self, node_id: int) -> bool:
        return node_id in self.learners

    def apply(self, change: ConfChange) -> Membership:
        """The configuration after `change`.

        Raises:
            ConfChangeRefused: the change does not fit this configuration
                (reason NOT_LEARNER, ALREADY_MEMBER, NOT_MEMBER, LAST_VOTER or INVALID).
        """
        i = change.node_id
        if change.type == ConfChangeType.BOOTSTRAP:
            raise ConfChangeRefused("BOOTSTRAP records the initial configuration; it is not a change to propose",
                                    Refusal.INVALID)
        if not isinstance(i, int) or not 0 < i <= _MAX_ID:
            raise ConfChangeRefused(f"replica ids are positive 64-bit integers, got {i!r}", Refusal.INVALID)
        if change.type == ConfChangeType.ADD_LEARNER:
            if i in self.voters or i in self.learners:
                role = "a voter" if i in self.voters else "a learner"
                raise ConfChangeRefused(f"replica {i} is already {role}; a replica joins once", Refusal.ALREADY_MEMBER)
            return Membership(self.voters, self.learners + (i,))
        if change.type == ConfChangeType.PROMOTE:
            if i not in self.learners:
                if i in self.voters:
                    raise ConfChangeRefused(f"replica {i} is already a voter", Refusal.NOT_LEARNER)
                raise ConfChangeRefused(f"replica {i} is not a learner: add it as a learner first", Refusal.NOT_LEARNER)
            return Membership(self.voters + (i,), tuple(x for x in self.learners if x != i))
        if change.type == ConfChangeType.REMOVE:
            if i in self.learners:
                return Membership(self.voters, tuple(x for x in self.learners if x != i))
            if i not in self.voters:
                raise ConfChangeRefused(f"replica {i} is not a member", Refusal.NOT_MEMBER)
            if len(self.voters) == 1:
                raise ConfChangeRefused(f"replica {i} is the last voter; add and promote another first",
                                        Refusal.LAST_VOTER)
            return Membership(tuple(x for x in self.voters if x != i), self.learners)
        raise ConfChangeRefused(f"unknown configuration change type {change.type!r}", Refusal.INVALID)

    # -- encoding ------------------------------------------------------------
    def encode(self) -> bytes:
        """The plain encoding (see the module docstring)."""
        ids = self.voters + self.learners
        return _COUNTS.pack(len(self.voters), len(self.learners)) + struct.pack(f"<{len(ids)}Q", *ids)

    @classmethod
    def decode(cls, data: bytes | memoryview) -> Membership:
        """Inverse of `encode`. Raises ValueError on anything but an exact, valid encoding."""
        if len(data) < _COUNTS.size:
            raise ValueError(f"membership encoding too short ({len(data)} bytes)")
        nv, nl = _COUNTS.unpack_from(data)
        if len(data) != _COUNTS.size + 8 * (nv + nl):
            raise ValueError(f"membership encoding of {nv} voters and {nl} learners has {len(data)} bytes")
        ids = struct.unpack_from(f"<{nv + nl}Q", data, _COUNTS.size)
        voters, learners = ids[:nv], ids[nv:]
        if list(voters) != sorted(voters) or list(learners) != sorted(learners):
            raise ValueError("membership encoding has unsorted ids")
        return cls(voters, learners)


@dataclass(frozen=True, slots=True)
class ConfChangeEntry:
    """What a CONF log entry says: the change, and the configuration it results in."""

    change: ConfChange
    membership: Membership


def encode_conf_entry(change: ConfChange, membership: Membership) -> bytes:
    """Data of the CONF entry recording `change`, which results in `membership`."""
    return _ENTRY_HEAD.pack(CONF_ENTRY_VERSION, change.type, change.node_id) + membership.encode()


def decode_conf_entry(data: bytes) -> ConfChangeEntry:
    """Decode the data of an `EntryKind.CONF` entry.

    Returns:
        The change and the whole configuration after it.
    Raises:
        ValueError: not a CONF entry of a version this raftkv reads.
    """
    if len(data) < _ENTRY_HEAD.size:
        raise ValueError(f"configuration change entry too short ({len(data)} bytes)")
    version, kind, node_id = _ENTRY_HEAD.unpack_from(data)
    if version != CONF_ENTRY_VERSION:
        raise ValueError(f"configuration change entry has version {version}, this raftkv reads {CONF_ENTRY_VERSION}")
    try:
        change = ConfChange(ConfChangeType(kind), node_id)
    except ValueError:
        raise ValueError(f"configuration change entry has unknown change type {kind}") from None
    return ConfChangeEntry(change, Membership.decode(memoryview(data)[_ENTRY_HEAD.size :]))
