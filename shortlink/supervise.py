"""Supervised background tasks: nothing a service runs in the background dies silently.

Every long-running task of a service (the click flusher, the spool replayer, the
Kafka connection, the link-change listener, the metrics writer, the recorder,
the deliverer, ...) is started through its app's `Supervisor`. When a task
raises anything but a cancellation, the supervisor logs the error with its
traceback, counts it (`<service>_task_restarts_total{task}`) and runs the task
again after a capped, jittered backoff (RESTART, a shortlink.retry schedule). A
task that keeps failing right after each restart (RESTARTS_BEFORE_FAILED times in
a row, none of them running for STABLE_SECONDS) cannot run: the supervisor marks
the process unhealthy (`/healthz` answers 503) and asks it to stop, so the process
supervisor (`run_workers`, Kubernetes) replaces it with a fresh one. A task that returns
normally has finished its job (for example the Kafka connection once made).

Each resource's cleanup context starts its own tasks and stops them (cancel and
wait) when it exits, so shutdown keeps the dependency order of the contexts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily

from shortlink.retry import Backoff

log = logging.getLogger(__name__)

RESTARTS_BEFORE_FAILED = 5
STABLE_SECONDS = 30.0  # a run this long resets the count of quick failures
# Waits before restarting a task that failed: 0.1 s doubling, at most 10 s (jittered).
RESTART = Backoff(first=0.1, cap=10.0)

TaskFactory = Callable[[], Coroutine[Any, Any, None]]


class Supervised:
    """One supervised task: its restart loop, and a way to stop it."""

    def __init__(self, supervisor: Supervisor, name: str, factory: TaskFactory) -> None:
        self.name = name
        self._supervisor = supervisor
        self._factory = factory
        self.failures = 0  # quick failures in a row
        self.task: asyncio.Task[None] = asyncio.create_task(self._run(), name=name)

    async def _run(self) -> None:
        supervisor = self._supervisor
        while True:
            started = time.monotonic()
            try:
                await self._factory()
            except asyncio.CancelledError:
                raise
            except Exception:
                if time.monotonic() - started >= STABLE_SECONDS:
                    self.failures = 0
                self.failures += 1
                supervisor.restarts[self.name] += 1
                if self.failures >= RESTARTS_BEFORE_FAILED:
                    log.critical(
                        "background task keeps failing; this process cannot recover",
                        exc_info=True,
                        extra={"task": self.name, "failures": self.failures},
                    )
                    supervisor.fail(self.name)
                    return
                delay = RESTART.delay(self.failures)
                log.error(
                    "background task failed; restarting it",
                    exc_info=True,
                    extra={"task": self.name, "failures": self.failures, "restart_in": delay},
                )
                await asyncio.sleep(delay)
                continue
            return

    async def stop(self, grace: float | None = None) -> None:
        """Cancel the task (if it still runs) and wait for it, at most `grace` seconds."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.task), grace)

    async def wait(self, grace: float | None = None) -> bool:
        """Wait until the task ends by itself; False if `grace` seconds passed first."""
        done, _ = await asyncio.wait({self.task}, timeout=grace)
        return bool(done)


class Supervisor:
    """The background tasks of one process, their restarts and the process's health."""

    def __init__(self, service: str, on_failure: Callable[[], None] | None = None) -> None:
        self.service = service  # metric prefix: shortlink_redirect, shortlink_api, forwarder
        self.restarts: Counter[str] = Counter()
        self.failed: str | None = None  # the first task that could not recover
        self._on_failure = on_failure
        self._tasks: list[Supervised] = []

    def spawn(self, name: str, factory: TaskFactory) -> Supervised:
        """Run `factory()` as a supervised task named `name`."""
        supervised = Supervised(self, name, factory)
        self._tasks.append(supervised)
        return supervised

    def recovered(self, name: str) -> None:
        """Count an unexpected error that task `name` caught and got over in place."""
        self.restarts[name] += 1

    def fail(self, name: str) -> None:
        """Mark the process unhealthy because `name` cannot run, and ask it to stop."""
        if self.failed is None:
            self.failed = name
            if self._on_failure is not None:
                self._on_failure()

    @property
    def healthy(self) -> bool:
        return self.failed is None

    def health(self) -> dict[str, Any]:
        """What /healthz shows: ok, or which task could not recover."""
        body: dict[str, Any] = {"status": "ok" if self.failed is None else "failing"}
        if self.failed is not None:
            body["failed_task"] = self.failed
        return body

    def restarts_metric(self) -> CounterMetricFamily:
        family = CounterMetricFamily(
            f"{self.service}_task_restarts",
            "Background tasks restarted after an unexpected error, by task",
            labels=["task"],
        )
        for task in sorted({t.name for t in self._tasks} | set(self.restarts)):
            family.add_metric([task], self.restarts[task])
        return family


SUPERVISOR = web.AppKey("supervisor", Supervisor)
# Set by shortlink.serve before startup: a task that cannot recover stops the process.
STOP = web.AppKey("stop_requested", asyncio.Event)


def supervisor_context(service: str) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx (register it first): the app's Supervisor, wired to stop the process."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        stop = app.get(STOP)
        app[SUPERVISOR] = Supervisor(service, on_failure=stop.set if stop is not None else None)
        yield

    return context
