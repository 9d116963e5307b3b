"""The chaos benchmark's tap counting: per-second tallies and the raw malformed-tap client."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

from loadtests import baseline_app
from loadtests.taps import NO_ANSWER, VARIANTS, Tally, malformed_taps, read_counts


def test_tally_counts_a_window_and_what_went_unanswered() -> None:
    """Answers are summed over the window's whole seconds; requests sent and not answered
    count as status 0 when more than could be in flight, and always over the whole run."""
    tally = Tally(
        answers=Counter({(100, 302): 10, (101, 302): 8, (101, 503): 2, (102, 302): 13}),
        sent=Counter({100: 12, 101: 15, 102: 10}),
        slack=3,
    )
    assert tally.between(100, 101) == Counter({302: 10})  # 2 in flight into the next second
    assert tally.between(101, 102) == Counter({302: 8, 503: 2, NO_ANSWER: 5})
    assert tally.total() == Counter({302: 31, 503: 2, NO_ANSWER: 4})


def test_last_bad_second_ignores_requests_in_flight_at_a_second_edge() -> None:
    """A 503, or more unanswered requests than connections, make a second bad; a few answered
    in the next second do not."""
    tally = Tally(
        answers=Counter({(100, 302): 96, (101, 302): 104, (102, 302): 40, (103, 302): 100}),
        sent=Counter({100: 100, 101: 100, 102: 100, 103: 100}),
        slack=5,
    )
    assert tally.last_bad_second(100, 104) == 102
    tally.answers[103, 503] += 1
    assert tally.last_bad_second(100, 104) == 103
    assert tally.last_bad_second(100, 102) is None


def test_read_counts_parses_what_the_lua_tail_writes(tmp_path: Path) -> None:
    """The counts file's sent and status lines become the tally."""
    path = tmp_path / "taps.counts"
    path.write_text("sent 100 12\nstatus 100 302 11\nstatus 100 503 1\nsent 101 3\n")
    tally = read_counts(path)
    assert tally.sent == Counter({100: 12, 101: 3})
    assert tally.answers == Counter({(100, 302): 11, (100, 503): 1})


async def test_malformed_taps_are_all_sent_and_all_answered(
    aiohttp_server: Callable[..., Any],
) -> None:
    """A second of raw malformed taps against a bare aiohttp app: every variant is sent,
    each tap gets an answer below 500, and the per-second tally agrees with the per-variant
    one."""
    tokens = ["AbCdEf1", "GhIjKl2"]
    server: TestServer = await aiohttp_server(baseline_app.build(dict.fromkeys(tokens, "/x")))
    assert server.port is not None
    taps = malformed_taps(server.port, tokens, rate=20)
    await taps.run(until=time.time() + 1)
    by_variant = {name: counts.total() for name, counts in taps.by_variant.items()}
    assert set(by_variant) == set(VARIANTS)
    assert all(n >= 3 for n in by_variant.values())
    answered = taps.tally.total()
    assert answered.total() == sum(by_variant.values())
    assert NO_ANSWER not in answered
    assert max(answered) < 500
    assert answered[302] > 0
