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
