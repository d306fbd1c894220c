"""The typed error hierarchy shared by every layer of raftkv.

All errors derive from `RaftKVError`, so `except RaftKVError` catches anything
the library raises on purpose. Messages say what to do next.
"""

from __future__ import annotations


class RaftKVError(Exception):
    """Base class of every error raftkv raises on purpose."""


class InvalidRequest(RaftKVError, ValueError):
    """The request is malformed: wrong types, empty key, bad range, and so on."""


class RequestTooLarge(InvalidRequest):
    """The request exceeds a configured size limit (request bytes, txn ops)."""


class CompareFailed(RaftKVError):
    """A conditional write's comparison did not hold (where raising helps)."""


class Compacted(RaftKVError):
    """The requested revision has been compacted away."""

    def __init__(self, message: str, compact_revision: int = 0) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class FutureRevision(RaftKVError):
    """The requested revision is newer than the store's current revision."""


class LeaseNotFound(RaftKVError):
    """The lease does not exist (never granted, expired or revoked)."""


class LeaseExists(RaftKVError):
    """A lease with the requested id already exists; ask for id 0 to get a fresh one."""


class LockTimeout(RaftKVError, TimeoutError):
    """The lock was not acquired (or the election not won) within the timeout.

    Nothing is left behind: the waiter's key was deleted.
    """


class LockNotHeld(RaftKVError):
    """The lock is not held by this holder (released, or its lease expired)."""


class NotElectionLeader(RaftKVError):
    """This campaigner does not lead the election (never won, resigned, or its
    lease expired), so it cannot proclaim."""


class NotLeader(RaftKVError):
    """This replica is not the leader. `leader_hint` is the leader's replica id, or 0."""

    def __init__(self, message: str = "not the leader", leader_hint: int = 0) -> None:
        super().__init__(message)
        self.leader_hint = leader_hint


class Unavailable(RaftKVError):
    """No quorum answered within the timeout; the outcome of a write is unknown."""


class ClientClosed(RaftKVError):
    """The client was closed; create a new one with `client.connect(name)`."""


class ClusterNotFound(RaftKVError):
    """No cluster of that name is running in this Ray namespace."""


class ClusterExists(RaftKVError):
    """A cluster of that name is already running; `connect` to it or stop it first."""


class StorageError(RaftKVError):
    """The durable log could not be read or written."""


class CorruptLog(StorageError):
    """A record failed its checksum somewhere other than the torn tail.

    Nothing is rewritten. Attributes `path` and `offset` locate the bad record.
    """

    def __init__(self, message: str, path: str = "", offset: int = 0) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset


class CodecError(InvalidRequest):
    """Bytes could not be decoded (truncated, corrupt or unknown format), or a
    value could not be encoded (a type outside the plain types).

    Nothing is applied for a command that fails to decode; fix the encoder or
    upgrade the replica that reads the newer format.
    """


class KeyNotFound(RaftKVError):
    """A put with `ignore_value` or `ignore_lease` named a key that does not exist.

    Write the key with a value (and lease) first.
    """


class StaleRequest(RaftKVError):
    """A command's sequence number belongs to the past of its client session.

    Either the client already acknowledged that sequence number (it is a stale
    duplicate), or its remembered result was discarded to bound memory. The
    command was NOT applied by this delivery; do not retry it with the same seq.
    """


class SessionExpired(RaftKVError):
    """The client's session was forgotten (idle past its TTL, or evicted).

    The command was NOT applied. Exactly-once delivery can no longer be
    guaranteed for this client id: start a new session (a new client id,
    seq starting at 1) and resend.
    """
