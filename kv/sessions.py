"""Client sessions: exactly-once application of retried commands.

Theory of operation
-------------------
A client numbers its commands: `seq` starts at 1 and increases by one per
command; many may be in flight at once, and a retry reuses the seq. Each
command also carries `ack`: the client has received the results of every seq
below ack, so they need not be remembered any longer.

For each client id the table keeps the results of applied commands, keyed by
seq, until they are acknowledged. When a command arrives:

1. seq < ack (the highest ack seen): a stale duplicate of an acknowledged
   command. Answer StaleRequest; apply nothing.
2. seq has a remembered result: a retry. Answer that result; apply nothing.
3. seq < floor (its result may have been evicted, see below): the command may
   or may not have been applied before; answer StaleRequest, apply nothing.
4. Otherwise apply it and remember the result.

Memory is bounded three ways, all decided from applied input only:
- at most `max_session_results` results per client: the lowest seqs are
  evicted, and `floor` rises above them (rule 3 keeps this safe);
- at most `max_sessions` clients: the least recently used is forgotten;
- a client idle for longer than `session_ttl` seconds is forgotten. Time is
  the `now` carried in log entries (the leader's clock), made monotonic by
  the state machine, never a local clock.

A command from an unknown client whose ack is above 1 belongs to a session
that was forgotten; its retries can no longer be recognised, so it is
answered SessionExpired (and not applied): the client must start a new
session under a new client id. An unknown client with ack 0 or 1 starts a
new session.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import OrderedDict
from typing import Any, Callable

from kv.errors import InvalidRequest, SessionExpired, StaleRequest
from kv.limits import DEFAULT_LIMITS, Limits

__all__ = ["SessionTable"]


class _Session:
    __slots__ = ("ack", "floor", "last_seen", "seqs", "results")

    def __init__(self, ack: int, last_seen: float) -> None:
        self.ack = ack  # every seq below it is acknowledged by the client
        self.floor = 0  # results of some seqs below it were evicted
        self.last_seen = last_seen
        # invariant: seqs is sorted and holds exactly the keys of results
        self.seqs: list[int] = []
        self.results: dict[int, Any] = {}

    def drop_below(self, seq: int) -> None:
        i = bisect_left(self.seqs, seq)
        if i:
            results = self.results
            for s in self.seqs[:i]:
                del results[s]
            del self.seqs[:i]


class SessionTable:
    """Remembered results of client commands, bounded, deterministic."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        # least recently used first; `now` is monotonic, so also oldest last_seen first
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, client_id: str) -> bool:
        return client_id in self._sessions

    def remembered(self, client_id: str) -> list[int]:
        """The seqs whose results are remembered for client_id (for tests and debugging)."""
        session = self._sessions.get(client_id)
        return list(session.seqs) if session else []

    def expire(self, now: float) -> int:
        """Forget sessions idle for longer than session_ttl at time now.

        Args:
            now: the current (monotonic) time from the log.

        Returns:
            How many sessions were forgotten.
        """
        deadline = now - self._limits.session_ttl
        sessions = self._sessions
        n = 0
        while sessions:
            client_id, session = next(iter(sessions.items()))
            if session.last_seen >= deadline:
                break
            del sessions[client_id]
            n += 1
        return n

    def begin(self, client_id: str, seq: int, ack: int, now: float) -> Any:
        """Look a command up before applying it.

        Args:
            client_id: the session (non-empty).
            seq: the command's sequence number (>= 1).
            ack: the client's acknowledgement (see the module docstring).
            now: the current (monotonic) time from the log.

        Returns:
            None if the command must be applied (then call `remember` with
            its result); otherwise the result to answer without applying: the
            remembered result of a retry, or an error instance
            (StaleRequest, SessionExpired, InvalidRequest).
        """
        if seq < 1 or ack < 0:
            return InvalidRequest(f"seq must be >= 1 and ack >= 0, got seq={seq} ack={ack}")
        sessions = self._sessions
        session = sessions.get(client_id)
        if session is None:
            if ack > 1:
                return SessionExpired(
                    f"session {client_id!r} is unknown (expired or evicted) but acknowledges "
                    f"seq {ack - 1}; the command was not applied: start a new session "
                    "(new client id, seq from 1) and resend"
                )
            session = _Session(ack, now)
            sessions[client_id] = session
            while len(sessions) > self._limits.max_sessions:
                sessions.popitem(last=False)
        else:
            session.last_seen = now
            sessions.move_to_end(client_id)
            if ack > session.ack:
                session.ack = ack
                session.drop_below(ack)
        if seq < session.ack:
            return StaleRequest(
                f"seq {seq} of session {client_id!r} was already acknowledged (ack {session.ack}); "
                "this delivery was not applied"
            )
        result = session.results.get(seq, _MISSING)
        if result is not _MISSING:
            return result
        if seq < session.floor:
            return StaleRequest(
                f"seq {seq} of session {client_id!r} is older than its oldest remembered result "
                f"(seq {session.floor}); it may have been applied before and this delivery was not "
                "applied. Acknowledge results sooner or raise max_session_results"
            )
        return None

    def remember(self, client_id: str, seq: int, result: Any) -> None:
        """Record the result of an applied command (after `begin` returned None)."""
        session = self._sessions[client_id]
        session.results[seq] = result
        seqs = session.seqs
        if not seqs or seq > seqs[-1]:
            seqs.append(seq)
        else:
            insort(seqs, seq)
        excess = len(seqs) - self._limits.max_session_results
        if excess > 0:
            for s in seqs[:excess]:
                del session.results[s]
            session.floor = max(session.floor, seqs[excess - 1] + 1)
            del seqs[:excess]

    # --- snapshot ---------------------------------------------------------------

    def to_plain(self, result_to_plain: Callable[[Any], Any]) -> list[Any]:
        """All sessions, least recently used first, as a plain value."""
        return self.freeze(result_to_plain)()

    def freeze(self, result_to_plain: Callable[[Any], Any]) -> Callable[[], list[Any]]:
        """Copy the table's shape now (remembered results are immutable and
        shared, not converted) and return a function that builds `to_plain()`
        of that state, safe to run on another thread."""
        frozen = [(client_id, s.ack, s.floor, s.last_seen, [(seq, s.results[seq]) for seq in s.seqs])
                  for client_id, s in self._sessions.items()]

        def build() -> list[Any]:
            out: list[Any] = []
            for client_id, ack, floor, last_seen, results in frozen:
                flat: list[Any] = []
                for seq, result in results:
                    flat.append(seq)
                    flat.append(result_to_plain(result))
                out.append([client_id, ack, floor, last_seen, flat])
            return out

        return build

    @classmethod
    def from_plain(
        cls, plain: list[Any], limits: Limits, result_from_plain: Callable[[Any], Any]
    ) -> SessionTable:
        """Rebuild a table from `to_plain()` output.

        Raises:
            InvalidRequest: plain is not a session table's plain form.
        """
        table = cls(limits)
        try:
            for client_id, ack, floor, last_seen, flat in plain:
                s = _Session(ack, last_seen)
                s.floor = floor
                for i in range(0, len(flat), 2):
                    s.seqs.append(flat[i])
                    s.results[flat[i]] = result_from_plain(flat[i + 1])
                table._sessions[client_id] = s
        except (TypeError, ValueError, IndexError) as exc:
            if isinstance(exc, InvalidRequest):
                raise
            raise InvalidRequest(f"malformed session table: {exc}") from None
        return table


_MISSING = object()
