"""Plain data that the Raft core consumes and produces.

Everything here is a frozen, slotted dataclass: cheap to build in the hot path,
safe to share between the core, the storage layer and the transport, and easy to
pickle across Ray actor calls. Nothing here does I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

# Replica ids are positive ints; 0 means "nobody" (no vote, no known leader).
NONE = 0


class EntryKind(enum.IntEnum):
    """What a log entry carries. Values are part of the on-disk format."""

    NORMAL = 0  # application command batch (empty data: the leader's no-op)
    CONF_CHANGE = 1  # membership change (seam for a later issue)


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. `data` is opaque to the core."""

    term: int
    index: int
    data: bytes = b""
    kind: EntryKind = EntryKind.NORMAL


@dataclass(frozen=True, slots=True)
class HardState:
    """What must reach disk before a vote or an append is acknowledged."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """The log position a snapshot covers (index 0 means: no snapshot)."""

    index: int = 0
    term: int = 0


@dataclass(frozen=True, slots=True)
class PersistedState:
    """What a replica recovers from its storage when it (re)starts.

    invariant: entries are contiguous and start at snapshot.index + 1.
    """

    hard_state: HardState = HardState()
    snapshot: SnapshotMeta = SnapshotMeta()
    entries: tuple[Entry, ...] = ()


class MessageType(enum.IntEnum):
    """Message kinds exchanged between replicas (and a few local ones)."""

    HUP = 0  # local: start an election
    PRE_VOTE = 1
    PRE_VOTE_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    APP = 5
    APP_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    TIMEOUT_NOW = 9
    READ_INDEX = 10  # follower -> leader: forwarded read_index request
    READ_INDEX_RESP = 11
    SNAP = 12  # seam for InstallSnapshot (later issue)


@dataclass(frozen=True, slots=True)
class Message:
    """One Raft message. Fields unused by a message type keep their defaults.

    Attributes:
        type: the message kind.
        src, dst: replica ids.
        term: the sender's term (0 for local messages).
        log_term, index: for APP the (term, index) of the entry preceding
            `entries`; for votes the candidate's last log term and index; for
            APP_RESP the index acknowledged (or rejected).
        entries: entries to append (APP only).
        commit: the sender's commit index (APP, HEARTBEAT).
        reject: the request was refused.
        reject_hint: for a rejected APP, the follower's hint index; `log_term`
            then carries the term at that index (fast backtracking).
        context: opaque bytes (ReadIndex round id, or b"transfer" on a vote
            forced by leader transfer).
    """

    type: MessageType
    src: int
    dst: int
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once `applied >= index`."""

    index: int
    context: bytes


@dataclass(slots=True)
class Ready:
    """A batch of work the core hands its driver.

    The driver must, in this order: persist `hard_state` (if not None) and
    `entries` (appending `entries` truncates any stored suffix from
    `entries[0].index` on) and fsync them; then send `messages` (or send them
    first when `early_send` is set); then apply
    `committed`; then release `read_states` once applied reaches their index;
    then call `advance(ready)`.
    """

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    soft_state: tuple[int, int] | None = None  # (leader, role) when it changed
    # A leader whose term and vote are already durable may send `messages`
    # before persisting `entries` (Raft thesis §10.2.1): it counts its own copy
    # toward a quorum only after `advance()`, and nothing it sends claims
    # durability of its own.
    early_send: bool = False

    @property
    def must_sync(self) -> bool:
        return self.hard_state is not None or bool(self.entries)
