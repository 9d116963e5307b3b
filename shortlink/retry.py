"""Retrying transient failures: the one backoff every retrying loop uses.

In the manner of stamina (Hynek Schlawack's retry library), a loop retries only
the failures it names as transient (a lost connection, a timeout, a broker that
is away, 5xx and 429 from a customer...); anything else is final, or a bug for
the supervisor (shortlink.supervise) to log and restart. Between attempts it
waits a jittered, exponentially growing delay with a cap. After the n-th failure
in a row (1-based):

    delay(n) = min(cap, first * 2**(n-1)) * uniform(1 - jitter, 1)

The jitter spreads processes that failed together (every worker when the broker
or the database went away), so they do not come back in lockstep. It only ever
shortens a wait: `first` is the longest first wait and `cap` the longest of all.
A schedule with `cap == first` waits about the same time after every failure.

A loop keeps its retries in a `Retry`: which failures are transient (`on`: a
tuple of exception classes, or a predicate such as shortlink.db.is_transient),
how many happened in a row, and the wait the next one calls for. Each schedule is
a `Backoff` constant named beside the loop that uses it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

# Which failures a loop retries: exception classes, or a predicate over the exception.
Transient = tuple[type[BaseException], ...] | Callable[[BaseException], bool]


@dataclass(frozen=True)
class Backoff:
    """A retry schedule: `first` seconds, doubling per failure, at most `cap`, jittered."""

    first: float
    cap: float
    jitter: float = 0.5  # a wait is drawn from [1 - jitter, 1] times the nominal one

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError(f"need 0 < first <= cap, got first={self.first}, cap={self.cap}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be from 0 to 1, got {self.jitter}")

    def nominal(self, failures: int) -> float:
        """The longest wait after the `failures`-th failure in a row (1-based)."""
        if failures < 1:
            raise ValueError(f"failures is 1-based, got {failures}")
        # The exponent is bounded: 2**1100 would not fit a float, and the cap wins long before.
        return float(min(self.cap, self.first * 2.0 ** min(failures - 1, 1000)))

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure in a row (1-based)."""
        jitter = random.uniform(1.0 - self.jitter, 1.0)  # noqa: S311 - spreads retries; not a secret
        return self.nominal(failures) * jitter


class Retry:
    """The retries of one loop: the failures it names as transient, and how long to
    wait after each one in a row."""

    def __init__(self, backoff: Backoff, on: Transient) -> None:
        self.backoff = backoff
        self._on = on
        self.failures = 0  # failures in a row since the last success

    def transient(self, error: BaseException) -> bool:
        """Whether `error` is one of the failures this loop waits out and tries again."""
        if isinstance(self._on, tuple):
            return isinstance(error, self._on)
        return self._on(error)

    def failed(self) -> float:
        """Count a failure; the seconds to wait before the next attempt."""
        self.failures += 1
        return self.backoff.delay(self.failures)

    async def wait(self) -> float:
        """Count a failure and wait the delay it calls for; return that delay."""
        delay = self.failed()
        await asyncio.sleep(delay)
        return delay

    def succeeded(self) -> None:
        """An attempt worked: the next failure waits `first` again."""
        self.failures = 0
