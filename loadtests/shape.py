"""The burst of a campaign's taps, kept apart from the locustfile (importing locust
monkey-patches the process with gevent, which the tests cannot have)."""

from __future__ import annotations

import math


def burst_users(elapsed: float, peak: int, duration: float) -> int:
    """Recipients active `elapsed` seconds after the send: the peak at once, then an
    exponential tail that reaches a tenth of the peak at `duration`."""
    return max(1, math.ceil(peak * math.exp(-math.log(10) * elapsed / duration) - 1e-9))
