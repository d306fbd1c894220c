"""Configured bounds of the state machine.

Every replica of a cluster must run with the same `Limits`: the outcome of
applying a command (accepted or rejected, which session results are evicted)
depends on them, and replicas must agree on every outcome.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Limits", "DEFAULT_LIMITS"]


class Limits(BaseModel):
    """Size, count and time bounds, validated when built from user config.

    Attributes:
        max_request_bytes: largest encoded request (1.5 MiB, as etcd).
        max_txn_ops: most operations in one txn (etcd's counting: per txn, the
            largest of its compare, success and failure lists; nested txns draw
            on what the enclosing txn leaves).
        max_session_results: remembered results per client session; beyond
            this the lowest sequence numbers are forgotten.
        max_sessions: remembered client sessions; beyond this the least
            recently used is forgotten.
        session_ttl: seconds a session may stay idle (by the leader's clock
            carried in the log) before it is forgotten.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_request_bytes: int = Field(default=1_572_864, gt=0)
    max_txn_ops: int = Field(default=128, gt=0)
    max_session_results: int = Field(default=10_000, gt=0)
    max_sessions: int = Field(default=100_000, gt=0)
    session_ttl: float = Field(default=600.0, gt=0)


DEFAULT_LIMITS = Limits()
