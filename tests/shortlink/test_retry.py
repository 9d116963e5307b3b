"""The retry helper: jittered exponential waits with a cap, only for named transient failures."""

from __future__ import annotations

import asyncio

import pytest

from shortlink.retry import Backoff, Retry


def test_waits_double_from_first_up_to_the_cap() -> None:
    """Without jitter the n-th wait is first * 2**(n-1), never more than the cap."""
    schedule = Backoff(first=0.5, cap=5.0, jitter=0.0)
    assert [schedule.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert schedule.delay(10_000) == 5.0  # no overflow however long the outage


def test_jitter_only_shortens_a_wait_within_its_fraction() -> None:
    """With jitter 0.5 each wait lies between half the nominal wait and the nominal wait."""
    schedule = Backoff(first=5.0, cap=3600.0)
    for failures, nominal in [(1, 5.0), (2, 10.0), (3, 20.0), (11, 3600.0)]:
        waits = [schedule.delay(failures) for _ in range(300)]
        assert nominal / 2 <= min(waits)
        assert max(waits) <= nominal
        assert len(set(waits)) > 1


def test_a_schedule_with_cap_equal_to_first_waits_about_the_same_each_time() -> None:
    """cap == first gives a fixed, jittered wait after every failure."""
    schedule = Backoff(first=1.0, cap=1.0)
    assert all(0.5 <= schedule.delay(n) <= 1.0 for n in range(1, 50))


@pytest.mark.parametrize(
    ("first", "cap", "jitter"), [(0.0, 1.0, 0.5), (2.0, 1.0, 0.5), (1.0, 1.0, 1.5)]
)
def test_a_schedule_that_makes_no_sense_is_refused(first: float, cap: float, jitter: float) -> None:
    """A first wait of zero, a cap below the first wait or a jitter above 1 is a ValueError."""
    with pytest.raises(ValueError, match=r"must|need"):
        Backoff(first=first, cap=cap, jitter=jitter)


def test_failures_are_counted_from_one() -> None:
    """Asking for the wait after failure 0 is a mistake, not a zero wait."""
    with pytest.raises(ValueError, match="1-based"):
        Backoff(first=1.0, cap=2.0).delay(0)


def test_only_the_named_failures_are_transient() -> None:
    """`on` names the transient failures, by class or by a predicate."""
    by_class = Retry(Backoff(first=0.1, cap=1.0), on=(TimeoutError, ConnectionError))
    assert by_class.transient(TimeoutError())
    assert by_class.transient(ConnectionResetError())
    assert not by_class.transient(ValueError())
    by_predicate = Retry(Backoff(first=0.1, cap=1.0), on=lambda exc: "again" in str(exc))
    assert by_predicate.transient(RuntimeError("try again"))
    assert not by_predicate.transient(RuntimeError("broken"))


def test_failures_in_a_row_grow_the_wait_and_a_success_resets_it() -> None:
    """Each failure in a row doubles the wait; a success starts again from the first."""
    retry = Retry(Backoff(first=0.1, cap=0.3, jitter=0.0), on=(OSError,))
    assert [retry.failed() for _ in range(4)] == [0.1, 0.2, 0.3, 0.3]
    assert retry.failures == 4
    retry.succeeded()
    assert retry.failures == 0
    assert retry.failed() == 0.1


async def test_wait_sleeps_the_delay_it_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    """wait() counts the failure and sleeps exactly the delay it reports."""
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    retry = Retry(Backoff(first=0.25, cap=1.0, jitter=0.0), on=(OSError,))
    assert await retry.wait() == 0.25
    assert await retry.wait() == 0.5
    assert slept == [0.25, 0.5]
    assert retry.failures == 2
