"""Rate-limited warnings for dropped peer input."""

from __future__ import annotations

import logging
import time

__all__ = ["RateLimitedWarning"]


class RateLimitedWarning:
    """Logs at most one WARNING per ``interval`` seconds and counts what it held back."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._next_at = 0.0
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next_at:
            self._suppressed += 1
            return
        if self._suppressed:
            message += " (%d similar warnings suppressed)"
            args = (*args, self._suppressed)
        self._suppressed = 0
        self._next_at = now + self._interval
        self._logger.warning(message, *args)
