"""Running services: one process's lifecycle, and N worker processes sharing a port.

A worker builds its web.Application (resources as cleanup contexts), starts it,
listens with SO_REUSEPORT, and on SIGTERM or SIGINT stops accepting, lets
in-flight requests finish (up to the shutdown timeout), then runs the cleanup
contexts in reverse (the click publisher flushes there) and exits 0.

`run_workers` starts N such processes (spawned, not forked), restarts one that
crashes, forwards SIGTERM/SIGINT, and gives up at once if a worker reports a
configuration problem (exit code EXIT_CONFIG), since a restart cannot fix that.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import uvloop
from aiohttp import web

from shortlink import logs
from shortlink.exceptions import STARTUP_ERRORS, TaskFailedError
from shortlink.supervise import STOP, SUPERVISOR

log = logging.getLogger(__name__)

EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h: configuration or schema problem
EXIT_SOFTWARE = 70  # EX_SOFTWARE: a background task could not recover; replace the process
_PR_SET_PDEATHSIG = 1
_GC_YOUNG_THRESHOLD = 50_000  # CPython's default is 700
# mallopt(3) parameters
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
# What the low-level server logs (the redirect server): a request that is not HTTP
# is a DEBUG line and a count (shortlink_redirect_malformed_requests_total).
HTTP_LOG = logs.http_logger("shortlink.http", logging.DEBUG)


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    shutdown_timeout: float,
    make_handler: Callable[[web.Application], Handler] | None = None,
    started: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Run `app` on host:port until SIGTERM/SIGINT (or `stop` is set), then shut down cleanly.

    With `make_handler`, requests go to the handler it builds (after startup, so it
    can bind the app's resources) through aiohttp's low-level server, skipping the
    router and middleware; otherwise the application handles them as usual.
    """
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    # A supervised task that cannot recover asks the process to stop (shortlink.supervise).
    app[STOP] = stop
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    runner: web.BaseRunner
    if make_handler is None:
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout
        )
        await runner.setup()
    else:
        # As web.AppRunner does: state may be set during startup, then everything freezes.
        app.on_startup.freeze()
        try:
            await app.startup()
        except BaseException:
            await app.cleanup()  # exit the contexts that did start
            raise
        app.freeze()
        server = web.Server(make_handler(app), access_log=None, logger=HTTP_LOG)
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=shutdown_timeout)
        await runner.setup()
    try:
        tune_process()
        site = web.TCPSite(runner, host, port, reuse_port=True, backlog=4096)
        await site.start()
        bound_port = port or _bound_port(runner)
        log.info("listening", extra={"host": host, "port": bound_port})
        if started is not None:
            started(bound_port)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()  # stop accepting, finish in-flight requests
        if make_handler is not None:
            await app.cleanup()  # the cleanup contexts, in reverse order
        for signum in signals:
            loop.remove_signal_handler(signum)
    supervisor = app.get(SUPERVISOR)
    if supervisor is not None and supervisor.failed is not None:
        raise TaskFailedError(supervisor.failed)


def tune_process() -> None:
    """Allocator and garbage-collector settings for a long-running, busy server process."""
    tune_malloc()
    tune_gc()


def tune_malloc() -> None:
    """Stop glibc from handing freed heap back to the kernel after every burst.

    By default glibc trims the top of the heap as soon as 128 KiB are free, so a
    process that allocates and frees a batch of buffers every few milliseconds
    (the click flusher's encoded events, aiohttp's request buffers) keeps giving
    pages back and faulting them in again. Measured here: orjson.dumps of a
    500-byte event cost 2.9 us with the default and 0.3 us with these settings.
    The price is that the process keeps its peak heap.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    libc.mallopt(_M_TOP_PAD, 16 << 20)
    libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the request path.

    With CPython's default thresholds a busy server runs a young-generation
    collection every few dozen requests, and now and then a full one that walks
    every cached link: measured at 160 ms with 100,000 links cached, which is
    the p99. Objects alive after startup are frozen (never scanned again) and the
    young threshold is raised, so collections become rare; nearly everything a
    request allocates is freed by reference counting anyway.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, 20, 10)


_gc_holds = 0
_gc_was_enabled = True


@contextlib.contextmanager
def gc_held() -> Iterator[None]:
    """No cyclic collection while this block (a bulk request) runs.

    A 200,000-recipient request keeps 600,000 tracked objects alive for a few seconds
    (its links to create, the rows PostgreSQL returns, the links made): each collection
    that comes due meanwhile walks them all, 70 to 110 ms measured, with every other
    request of the worker waiting. They are freed by reference counting; the collector
    is back as it was when the last bulk request in the process is done.
    """
    global _gc_holds, _gc_was_enabled  # one count per process, as there is one collector
    if _gc_holds == 0:
        _gc_was_enabled = gc.isenabled()
        gc.disable()
    _gc_holds += 1
    try:
        yield
    finally:
        _gc_holds -= 1
        if _gc_holds == 0 and _gc_was_enabled:
            gc.enable()


def _bound_port(runner: web.BaseRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    return 0


def run_in_process(main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run a service coroutine on uvloop; configuration errors become EXIT_CONFIG, a
    background task that could not recover EXIT_SOFTWARE."""
    try:
        uvloop.run(main())
    except TaskFailedError as exc:
        log.critical(str(exc), extra={"error": type(exc).__name__, "task": exc.task})
        return EXIT_SOFTWARE
    except STARTUP_ERRORS as exc:
        log.critical(str(exc), extra={"error": type(exc).__name__})
        return EXIT_CONFIG
    return 0


def _worker_main(target: Callable[[int], int], index: int, parent: int) -> None:
    """Entry point of a spawned worker: die with the supervisor, run, exit with its code."""
    exit_with_parent(parent)
    raise SystemExit(target(index))


def exit_with_parent(parent: int) -> None:
    """Ask Linux to send us SIGTERM when the supervisor `parent` dies (even by SIGKILL).

    The request only covers a parent that is still alive when it is made: a
    supervisor killed while this process was starting has already gone, and
    we were re-parented. So the parent is checked after asking, and if it is no
    longer ours, we leave at once (os._exit: nothing of ours runs yet).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: workers outlive a killed supervisor
        return
    if os.getppid() != parent:
        os._exit(1)


def run_workers(target: Callable[[int], int], count: int, name: str) -> int:
    """Run `target(index)` in `count` spawned processes until SIGTERM/SIGINT."""
    context = multiprocessing.get_context("spawn")
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    workers: dict[int, multiprocessing.process.BaseProcess] = {}

    def start(index: int) -> None:
        process = context.Process(
            target=_worker_main, args=(target, index, os.getpid()), name=f"{name}-{index}"
        )
        process.start()
        workers[index] = process

    exit_code = 0
    try:
        for index in range(count):
            start(index)
        while not stopping:
            sentinels = [process.sentinel for process in workers.values()]
            multiprocessing.connection.wait(sentinels, timeout=0.5)
            for index, process in list(workers.items()):
                if process.is_alive() or stopping:
                    continue
                if process.exitcode == EXIT_CONFIG:
                    log.critical("worker cannot start; stopping", extra={"worker": index})
                    exit_code = EXIT_CONFIG
                    stopping = True
                    break
                log.error(
                    "worker exited; restarting it",
                    extra={"worker": index, "exit_code": process.exitcode},
                )
                time.sleep(1.0)
                start(index)
    finally:
        for process in workers.values():
            if process.is_alive():
                process.terminate()  # SIGTERM: each worker shuts down cleanly
        deadline = time.monotonic() + 60
        for process in workers.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker did not stop in time; killing it", extra={"pid": process.pid})
                process.kill()
                process.join()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return exit_code
