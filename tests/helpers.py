"""Small helpers shared by the test modules (no tests here)."""

from __future__ import annotations

import time
from typing import Callable


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
