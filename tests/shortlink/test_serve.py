"""The redirect server as a process: graceful SIGTERM, several workers on one port."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import asyncpg
import pytest

from shortlink import clickevent
from shortlink.dev import embedded
from shortlink.links import NewLink, create_links
from shortlink.serve import gc_held
from tests.infra import consume, status_of, wait_until


def spawn_redirect(env: dict[str, str], port: int, workers: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shortlink.cli",
            "redirect",
            "--workers",
            str(workers),
            "--port",
            str(port),
        ],
        env={**os.environ, **env},
    )


async def start_redirect(env: dict[str, str], port: int, workers: int) -> subprocess.Popen[bytes]:
    """The redirect command line with `workers` workers on `port`, once it is ready."""
    process = spawn_redirect(env, port, workers)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the redirect server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        await wait_until(ready, within=60, step=0.1, what="the redirect server ready")
    except AssertionError:
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """Make sure the process and its workers are gone, even after a failed assertion."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def workers_of(process: subprocess.Popen[bytes]) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(process.pid), "-f", "spawn_main"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return [int(pid) for pid in found]


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def status(url: str) -> int:
    return status_of(url)[0]


@pytest.fixture
async def token(db: asyncpg.Connection, account_id: int) -> str:
    [link] = await create_links(db, account_id, [NewLink("https://example.com/sigterm")])
    return link.token


async def test_sigterm_flushes_buffered_clicks(
    redirect_env: dict[str, str], token: str, kafka_bootstrap: str, click_topic: str
) -> None:
    """Clicks still in the buffer at SIGTERM reach Kafka, and the process exits 0."""
    port = embedded.free_port()
    # A ten-minute linger: without the flush on shutdown, none of these would be sent.
    env = {**redirect_env, "PUBLISH_LINGER_MS": "600000"}
    process = await start_redirect(env, port, workers=1)
    try:
        assert [status(f"http://127.0.0.1:{port}/{token}") for _ in range(10)] == [302] * 10
        assert await consume(kafka_bootstrap, click_topic, 1, within=1.0) == []
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        stop(process)
    records = await consume(kafka_bootstrap, click_topic, 10, to_end=True)
    assert len(records) == 10
    assert {clickevent.decode(r.value).token for r in records} == {token}


async def test_workers_share_the_port_and_stop_together(
    redirect_env: dict[str, str], token: str, kafka_bootstrap: str, click_topic: str
) -> None:
    """Two workers serve one port; SIGTERM stops both cleanly and every click is published."""
    port = embedded.free_port()
    process = await start_redirect(redirect_env, port, workers=2)
    try:
        assert [status(f"http://127.0.0.1:{port}/{token}") for _ in range(40)] == [302] * 40
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        stop(process)
    records = await consume(kafka_bootstrap, click_topic, 40, to_end=True)
    assert len(records) == 40
    assert not embedded.port_is_open("127.0.0.1", port)


async def test_a_crashed_worker_is_replaced(redirect_env: dict[str, str], token: str) -> None:
    """When a worker dies, the supervisor starts another and the port keeps answering."""
    port = embedded.free_port()
    process = await start_redirect(redirect_env, port, workers=2)
    try:
        workers = workers_of(process)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)

        def replaced() -> bool:
            now = workers_of(process)
            return len(now) == 2 and workers[0] not in now

        await wait_until(replaced, step=0.2, what="a replacement worker")
        assert status(f"http://127.0.0.1:{port}/{token}") == 302
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        stop(process)


async def test_workers_exit_when_the_supervisor_is_killed(redirect_env: dict[str, str]) -> None:
    """Workers do not outlive a supervisor killed with SIGKILL."""
    port = embedded.free_port()
    process = await start_redirect(redirect_env, port, workers=2)
    workers = workers_of(process)
    assert len(workers) == 2
    process.kill()
    process.wait()
    await wait_until(
        lambda: not any(alive(pid) for pid in workers), what="workers exit with their supervisor"
    )


ORPHAN_CHECK = """
import os, sys
from shortlink.serve import exit_with_parent
exit_with_parent(int(sys.argv[1]))
print("still running")
"""


@pytest.mark.parametrize("parent_is_ours", [True, False])
def test_a_worker_whose_supervisor_is_already_gone_leaves_at_once(parent_is_ours: bool) -> None:
    """exit_with_parent checks the parent after asking for SIGTERM on its death: a worker
    whose supervisor died while it was starting (it was re-parented) exits instead of living on."""
    parent = os.getpid() if parent_is_ours else 1
    result = subprocess.run(
        [sys.executable, "-c", ORPHAN_CHECK, str(parent)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if parent_is_ours:
        assert (result.returncode, result.stdout) == (0, "still running\n")
    else:
        assert (result.returncode, result.stdout) == (1, "")


def test_gc_is_held_until_the_last_bulk_request_is_done() -> None:
    """Nested or overlapping holds keep the collector off until the last one ends; then it
    is as it was before (left off if it was off)."""
    assert gc.isenabled()
    with gc_held():
        with gc_held():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_held():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
