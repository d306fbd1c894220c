"""Plain data that the Raft core consumes and produces.

Everything here is a frozen, slotted dataclass: cheap to build in the hot path,
safe to share between the core, the storage layer and the transport, and easy to
pickle across Ray actor calls. Nothing here does I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from raft_actors.membership import Membership

# Replica ids are positive ints; 0 means "nobody" (no vote, no known leader).
NONE = 0


class EntryKind(enum.IntEnum):
    """What a log entry carries. Values are part of the on-disk format."""

    NORMAL = 0  # application command batch (empty data: the leader's no-op)
    # A membership change: `raft_actors.membership.decode_conf_entry(data)`
    # gives the change and the whole configuration after it.
    CONF = 1
    CONF_CHANGE = 1  # the same kind, by its older name


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
    """The log position a snapshot covers (index 0 means: no snapshot).

    `conf` is the configuration in effect at `index` (the last CONF entry at
    or before it): the log entries that said so are gone with the prefix, so
    the snapshot carries it. None means unknown (a snapshot written before
    membership changes existed); the core then assumes its initial
    configuration (`Config.peers`).
    """

    index: int = 0
    term: int = 0
    conf: Membership | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An application snapshot: state machine `data` covering the log up to `meta.index`.

    `data` is opaque to the core and to storage; only the application encodes
    and decodes it.
    """

    meta: SnapshotMeta
    data: bytes


@dataclass(frozen=True, slots=True)
class PersistedState:
    """What a replica recovers from its storage when it (re)starts.

    Attributes:
        hard_state: term, vote, commit.
        snapshot: the log position the snapshot covers (index 0: none).
        entries: the log after the snapshot.
        snapshot_data: the state machine snapshot at `snapshot.index`, as saved
            by `save_snapshot`; None when there is no snapshot, or when the
            position was recorded by `compact()` alone (the application then
            keeps its snapshot elsewhere, and the core cannot send one).
            The driver restores its state machine from it before applying
            anything; the core's applied index starts at `snapshot.index`.

    invariant: entries are contiguous and start at snapshot.index + 1.
    """

    hard_state: HardState = HardState()
    snapshot: SnapshotMeta = SnapshotMeta()
    entries: tuple[Entry, ...] = ()
    snapshot_data: bytes | None = None


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
    SNAP = 12  # leader -> follower: one chunk of an InstallSnapshot
    SNAP_RESP = 13  # follower -> leader: bytes held so far, or installed


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
        snap_offset: for SNAP the byte offset of `snap_chunk` in the
            snapshot's data; for SNAP_RESP how many bytes (from offset 0) the
            follower holds, i.e. the offset it wants next.
        snap_chunk: for SNAP a piece of the snapshot's data.
        snap_done: for SNAP, `snap_chunk` is the last piece; for SNAP_RESP,
            the follower installed the snapshot (or its commit index already
            covered it) and its log matches the leader's up to `index`.
        snap_conf: for SNAP, the configuration at the snapshot's index.

    For SNAP and SNAP_RESP, `index` and `log_term` name the snapshot (the
    index and term of the last entry it covers). A SNAP_RESP with `reject`
    set asks the leader to resend from `snap_offset` (a chunk was missing).
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
    snap_offset: int = 0
    snap_chunk: bytes = b""
    snap_done: bool = False
    snap_conf: Membership | None = None


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once `applied >= index`."""

    index: int
    context: bytes


@dataclass(slots=True)
class Ready:
    """A batch of work the core hands its driver.

    The driver must, in this order:

    1. if `snapshot` is set (a leader's snapshot was installed), save it
       durably: `storage.save_snapshot(snapshot.meta, snapshot.data)`. This
       comes before the entries: they continue the log after the snapshot.
       `snapshot.meta.conf` is the configuration at its index (the
       application's peers, until CONF entries after it say otherwise);
    2. persist `hard_state` (if not None) and `entries` (appending `entries`
       truncates any stored suffix from `entries[0].index` on) and fsync them;
    3. send `messages` (or send them first when `early_send` is set; it never
       is when `snapshot` is set, because the acknowledgement of a snapshot
       must not leave before the snapshot is durable);
    4. if `snapshot` is set, restore the state machine from `snapshot.data`
       (it then reflects every entry up to `snapshot.meta.index`), before
       applying anything else;
    5. apply `committed` (they follow the snapshot, if any). Entries of kind
       `EntryKind.CONF` are membership changes: decode them with
       `raft_actors.membership.decode_conf_entry` (the application uses
       them to learn its peers; a replica that applies its own removal may
       shut down);
    6. release `read_states` once applied reaches their index;
    7. call `advance(ready)`.
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
    # A snapshot received from the leader, to save and restore from (see above).
    snapshot: Snapshot | None = None

    @property
    def must_sync(self) -> bool:
        return self.hard_state is not None or bool(self.entries) or self.snapshot is not None
