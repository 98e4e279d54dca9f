"""A circuit breaker: after repeated failures, stop calling a service for a
cooldown, then let one trial call through.

    closed  --`threshold` failures in a row-->  open
    open    --`cooldown` seconds passed----->  half-open (one trial call allowed)
    half-open: trial succeeds -> closed; trial fails -> open again

Used from one event loop (no lock): every transition happens between awaits.
"""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["Breaker"]


class Breaker:
    """``allow()`` before a call (False: skip it); then exactly one of
    ``succeeded()``, ``failed()`` or ``abandoned()`` (cancelled) for a call that
    was allowed."""

    __slots__ = ("threshold", "cooldown", "clock", "failures", "open_until", "trial", "opened")

    def __init__(
        self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.failures = 0
        self.open_until = 0.0
        self.trial = False
        self.opened = 0
        """How many times the breaker has opened."""

    @property
    def state(self) -> str:
        """ "closed", "open" (calls are skipped) or "half-open" (the next call is a trial)."""
        if self.failures < self.threshold:
            return "closed"
        if self.trial or self.clock() < self.open_until:
            return "open"
        return "half-open"

    def allow(self) -> bool:
        """True if a call may go out now (a half-open breaker allows one trial)."""
        if self.failures < self.threshold:
            return True
        if self.trial or self.clock() < self.open_until:
            return False
        self.trial = True
        return True

    def succeeded(self) -> bool:
        """Record a success; True if the breaker closed because of it (it was
        open or half-open: the trial call succeeded)."""
        was_open = self.failures >= self.threshold
        self.failures = 0
        self.trial = False
        return was_open

    def failed(self) -> bool:
        """Record a failure; True if the breaker opened because of it: it was
        closed, half-open, or this was the trial call. A call allowed before
        the breaker opened and failing while it is open (a concurrent one)
        extends the cooldown but is no new opening (False; ``opened`` unchanged)."""
        now = self.clock()
        was_open = self.failures >= self.threshold and not self.trial and now < self.open_until
        self.trial = False
        self.failures += 1
        if self.failures < self.threshold:
            return False
        self.open_until = now + self.cooldown
        if was_open:
            return False
        self.opened += 1
        return True

    def abandoned(self) -> None:
        """The allowed call was cancelled: no outcome; a trial may go out again."""
        self.trial = False
