"""Shared helpers for the kv tests (no tests here): drive a KVStateMachine like a replica would."""

from __future__ import annotations

from typing import Any

from kv.limits import Limits
from kv.state_machine import Command, KVStateMachine, encode_batch


class Driver:
    """Feeds commands to a state machine as consecutive log entries."""

    def __init__(self, limits: Limits | None = None, now: float = 1000.0, term: int = 1) -> None:
        self.sm = KVStateMachine(limits)
        self.index = 0
        self.now = now
        self.term = term

    def apply(self, *commands: Command, now: float | None = None) -> list[Any]:
        """Apply one entry holding these commands; return the results."""
        self.index += 1
        data = encode_batch(list(commands), self.now if now is None else now)
        return self.sm.apply(self.index, self.term, data)

    def do(self, op: Any) -> Any:
        """Apply one non-deduplicated command; return its result."""
        return self.apply(Command("", 0, 0, op))[0]

    def ok(self, op: Any) -> Any:
        """Like do(), but fail the test if the result is an error."""
        result = self.do(op)
        assert not isinstance(result, Exception), result
        return result
