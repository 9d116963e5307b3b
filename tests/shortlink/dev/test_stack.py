"""`make run` (shortlink dev): the whole stack up, demo data, a clean stop on Ctrl-C."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from shortlink.dev import embedded
from tests.infra import status_of, wait_until

PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"


def read_until(process: subprocess.Popen[bytes], output: str, text: str, within: float) -> str:
    """Read the process's stdout until `text` appears; everything read so far."""
    assert process.stdout is not None
    deadline = time.monotonic() + within
    while text not in output:
        if process.poll() is not None or time.monotonic() > deadline:
            interrupt(process)
            raise AssertionError(f"no {text!r}; output so far:\n{output}")
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            output += os.read(process.stdout.fileno(), 65536).decode()
    return output


def start_stack(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """Start `shortlink dev`, wait for its banner, return it and the output so far."""
    process = subprocess.Popen(
        [sys.executable, "-m", "shortlink.cli", "dev"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    return process, read_until(process, "", "Press Ctrl-C", 120)


def demo_status(output: str) -> tuple[int, str]:
    url = re.search(r"curl -i -A '[^']+' (http://127\.0\.0\.1:\d+/[0-9A-Za-z]{7}) ", output)
    assert url, output
    found = status_of(url[1], {"User-Agent": PHONE})
    assert found[0] != 200, "the demo link did not redirect"
    return found[0], found[1] or ""


def metric_value(url: str, sample: str) -> float:
    """The value of one sample on a /metrics page (0.0 when it is not there)."""
    value = 0.0
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our server
        for line in response.read().decode().splitlines():
            if line.startswith(sample + " "):
                value = float(line.rsplit(" ", 1)[1])
    return value


async def wait_for_metric(url: str, sample: str, within: float = 10.0) -> None:
    """Wait until one sample on a /metrics page is above zero."""
    await wait_until(lambda: metric_value(url, sample) > 0, within, 0.3, what=f"{sample} > 0")


def interrupt(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


async def test_stack_on_given_servers_serves_the_demo_link_and_stops_cleanly(
    database_url: str, kafka_bootstrap: str, click_topic: str, tmp_path: Path
) -> None:
    """With both servers given, a demo tap redirects and is forwarded; Ctrl-C stops all."""
    port = embedded.free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CLICK_TOPIC": click_topic,
        "REDIRECT_PORT": str(port),
        "FORWARDER_PORT": str(embedded.free_port()),
        "DEMO_ENDPOINT_PORT": str(embedded.free_port()),
        "SHORTLINK_DATA_DIR": str(tmp_path),
        "REDIRECT_METRICS_PORT": str(embedded.free_port()),
    }
    process, output = start_stack(env)
    try:
        assert demo_status(output) == (302, "https://example.com/")
        first_token = re.search(r"/([0-9A-Za-z]{7}) +# 302", output)
        # The tap travels through Kafka and the forwarder to the demo endpoint.
        output = read_until(process, output, "demo endpoint received", 30)
        # Both redirect workers' counts, summed on the metrics port; the forwarder's own.
        redirect_metrics = f"http://127.0.0.1:{env['REDIRECT_METRICS_PORT']}/metrics"
        assert redirect_metrics in output
        sample = 'shortlink_redirect_responses_total{status="302"}'
        await wait_for_metric(redirect_metrics, sample)
        forwarder_metrics = f"http://127.0.0.1:{env['FORWARDER_PORT']}/metrics"
        await wait_for_metric(forwarder_metrics, "forwarder_clicks_recorded_total")
        delivered = 'forwarder_delivery_attempts_total{result="delivered"}'
        await wait_for_metric(forwarder_metrics, delivered)
    finally:
        code = interrupt(process)
    assert code == 0
    assert not embedded.port_is_open("127.0.0.1", port)
    assert not (tmp_path / "postgres").exists()  # the embedded server was not used

    process, output = start_stack(env)
    try:
        again = re.search(r"/([0-9A-Za-z]{7}) +# 302", output)
        assert first_token is not None
        assert again is not None
        assert first_token[1] == again[1]  # the demo link is reused
    finally:
        assert interrupt(process) == 0


async def test_stack_with_no_configuration_starts_and_stops_embedded_servers(
    tmp_path: Path,
) -> None:
    """With nothing configured, embedded PostgreSQL and tansu start, serve, and stop on Ctrl-C."""
    port = embedded.free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")
    }
    env.update(
        {
            "REDIRECT_PORT": str(port),
            "FORWARDER_PORT": str(embedded.free_port()),
            "DEMO_ENDPOINT_PORT": str(embedded.free_port()),
            "SHORTLINK_DATA_DIR": str(tmp_path),
        }
    )
    broker_was_running = embedded.port_is_open("127.0.0.1", embedded.DEV_BROKER_PORT)
    process, output = start_stack(env)
    try:
        assert "embedded, data in" in output
        assert demo_status(output) == (302, "https://example.com/")
        assert (tmp_path / "postgres" / "postmaster.pid").exists()
    finally:
        code = interrupt(process)
    assert code == 0
    assert not embedded.port_is_open("127.0.0.1", port)
    pid_file = tmp_path / "postgres" / "postmaster.pid"
    await wait_until(lambda: not pid_file.exists(), what="the embedded PostgreSQL stopped")
    if not broker_was_running:
        assert not embedded.port_is_open("127.0.0.1", embedded.DEV_BROKER_PORT)
    assert (tmp_path / "postgres" / "PG_VERSION").exists()  # data kept for the next run
