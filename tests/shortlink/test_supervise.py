"""Supervised background tasks: logged, counted, restarted; a hopeless one stops the process."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from shortlink.exceptions import ConfigError, SpoolLocked, TaskFailedError
from shortlink.metrics import render
from shortlink.redirect.app import METRICS, create_app, make_handler
from shortlink.redirect.config import RedirectConfig
from shortlink.serve import EXIT_CONFIG, EXIT_SOFTWARE, run_in_process
from shortlink.supervise import RESTARTS_BEFORE_FAILED, SUPERVISOR, Supervisor
from tests.infra import metric_samples, running


async def test_a_failing_task_is_logged_counted_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected error is logged with its traceback, counted, and the task runs again."""
    supervisor = Supervisor("test")
    runs: list[int] = []
    done = asyncio.Event()

    async def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("first run breaks")
        done.set()

    caplog.set_level(logging.ERROR, logger="shortlink.supervise")
    supervisor.spawn("flaky", flaky)
    await asyncio.wait_for(done.wait(), 5)
    assert len(runs) == 2
    assert supervisor.restarts["flaky"] == 1
    assert supervisor.healthy
    [record] = [r for r in caplog.records if r.message.startswith("background task failed")]
    assert record.exc_info is not None
    assert "first run breaks" in str(record.exc_info[1])
    assert getattr(record, "task") == "flaky"  # noqa: B009 - an `extra` field


async def test_a_task_that_cannot_run_makes_the_process_unhealthy() -> None:
    """A task failing at once after every restart marks the process failed and asks it to stop."""
    stopped = asyncio.Event()
    supervisor = Supervisor("test", on_failure=stopped.set)

    async def broken() -> None:
        raise ValueError("never works")

    supervisor.spawn("broken", broken)
    await asyncio.wait_for(stopped.wait(), 10)
    assert not supervisor.healthy
    assert supervisor.health() == {"status": "failing", "failed_task": "broken"}
    assert supervisor.restarts["broken"] == RESTARTS_BEFORE_FAILED
    [sample] = supervisor.restarts_metric().samples
    assert (sample.labels, sample.value) == ({"task": "broken"}, RESTARTS_BEFORE_FAILED)


async def test_a_redirect_worker_with_a_hopeless_task_reports_it_and_exits(
    redirect_env: dict[str, str],
) -> None:
    """/healthz names the failed task (503) and the server stops with TaskFailedError."""
    config = RedirectConfig.from_env(redirect_env)
    app = create_app(config)
    release = asyncio.Event()

    async def broken() -> None:
        raise OSError("disk gone")

    async def serve_until_it_fails() -> None:
        async with running(app, make_handler) as server:
            supervisor = app[SUPERVISOR]
            supervisor._on_failure = release.set  # hold the stop back to look at /healthz
            supervisor.spawn("broken", broken)
            await asyncio.wait_for(release.wait(), 10)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{server.url}/healthz") as response:
                    assert response.status == 503
                    assert await response.json() == {"status": "failing", "failed_task": "broken"}

    with pytest.raises(TaskFailedError) as failure:
        await serve_until_it_fails()
    assert failure.value.task == "broken"


def test_a_failed_task_exits_with_ex_software() -> None:
    """run_in_process turns TaskFailedError into exit code 70 (run_workers restarts it)."""

    async def main() -> None:
        raise TaskFailedError("click-flusher")

    assert run_in_process(main) == EXIT_SOFTWARE


def test_only_a_start_up_error_exits_with_ex_config() -> None:
    """A setting or schema problem exits 78 (not restarted); another domain error is a crash."""

    async def misconfigured() -> None:
        raise ConfigError("SHORT_DOMAIN is not set")

    async def locked() -> None:
        raise SpoolLocked("spool in use")

    assert run_in_process(misconfigured) == EXIT_CONFIG
    with pytest.raises(SpoolLocked):  # exit 1: run_workers restarts the worker
        run_in_process(locked)


async def test_restarts_are_a_metric_of_the_redirect_worker(
    redirect_env: dict[str, str],
) -> None:
    """shortlink_redirect_task_restarts_total{task} lists the worker's tasks and counts."""
    config = RedirectConfig.from_env(redirect_env)
    app = create_app(config)
    async with running(app, make_handler):
        app[SUPERVISOR].recovered("click-flusher")
        samples = metric_samples(render(app[METRICS]).decode())
    assert samples[("shortlink_redirect_task_restarts_total", (("task", "click-flusher"),))] == 1
    assert ("shortlink_redirect_task_restarts_total", (("task", "link-listener"),)) in samples
