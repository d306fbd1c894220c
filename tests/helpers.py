"""Small helpers shared by the test modules (no tests here)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from raft_actors.core import RaftCore
    from raft_actors.types import Message, MessageType, Ready


def wait_for(pred: Callable[[], object], timeout: float = 20.0, every: float = 0.05) -> bool:
    """Poll `pred` until it is true or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every)
    return bool(pred())


def take_events(w, n: int, timeout: float = 10.0) -> list:
    """The first n events of watch `w` (fewer if `timeout` passes first: the
    watch is then cancelled, which ends the iteration)."""
    import threading

    got: list = []
    timer = threading.Timer(timeout, w.cancel)
    timer.start()
    try:
        for ev in w:
            got.append(ev)
            if len(got) >= n:
                break
    finally:
        timer.cancel()
    return got


# -- driving one Raft core by hand (core unit tests) ------------------------------

def drain(core: RaftCore) -> list[Ready]:
    """Act as a driver that persists, sends nothing, applies everything."""
    out = []
    while core.has_ready():
        rd = core.ready()
        core.advance(rd)
        out.append(rd)
    return out


def sent(readies: list[Ready], type_: MessageType | None = None, to: int | None = None) -> list[Message]:
    """The messages those Readies would send (of one type, to one peer, if given)."""
    return [m for rd in readies for m in rd.messages
            if (type_ is None or m.type == type_) and (to is None or m.dst == to)]
