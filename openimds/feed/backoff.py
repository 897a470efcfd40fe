"""Exponential backoff: one rule for every retry of the feed's consumers."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff", "exponential_delay"]


def exponential_delay(attempt: int, initial: float, maximum: float) -> float:
    """The delay before retry number `attempt` (1, 2, ...): initial, 2x, 4x, ... up to maximum."""
    return float(min(maximum, initial * 2 ** max(0, attempt - 1)))


@dataclass
class Backoff:
    """Exponential backoff with jitter (± `jitter` of each delay), so many agents do not
    hammer a recovering API at once. `jitter=0` gives the plain sequence."""

    initial: float = 0.5
    maximum: float = 15.0
    jitter: float = 0.2
    _attempt: int = field(default=0, init=False)

    @property
    def attempts(self) -> int:
        """Delays handed out since the last reset (failures in a row)."""
        return self._attempt

    def reset(self) -> None:
        self._attempt = 0

    def next_delay(self) -> float:
        self._attempt += 1
        delay = exponential_delay(self._attempt, self.initial, self.maximum)
        if self.jitter:
            delay *= random.uniform(1 - self.jitter, 1 + self.jitter)
        return delay
