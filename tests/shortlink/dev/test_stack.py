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

PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


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
    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url[1], headers={"User-Agent": PHONE})  # noqa: S310
    try:
        opener.open(request, timeout=5)
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Location"]
    raise AssertionError("the demo link did not redirect")


def wait_for_metric(url: str, sample: str, within: float = 10.0) -> float:
    """The value of one sample on a /metrics page, once it is above zero (or 0.0)."""
    deadline = time.monotonic() + within
    value = 0.0
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our server
            for line in response.read().decode().splitlines():
                if line.startswith(sample + " "):
                    value = float(line.rsplit(" ", 1)[1])
        if value > 0:
            return value
        time.sleep(0.3)
    return value


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


def test_stack_on_given_servers_serves_the_demo_link_and_stops_cleanly(
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
        assert wait_for_metric(redirect_metrics, sample) >= 1
        forwarder_metrics = f"http://127.0.0.1:{env['FORWARDER_PORT']}/metrics"
        assert wait_for_metric(forwarder_metrics, "forwarder_clicks_recorded_total") >= 1
        delivered = 'forwarder_delivery_attempts_total{result="delivered"}'
        assert wait_for_metric(forwarder_metrics, delivered) >= 1
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


def test_stack_with_no_configuration_starts_and_stops_embedded_servers(tmp_path: Path) -> None:
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
    deadline = time.monotonic() + 30
    while (tmp_path / "postgres" / "postmaster.pid").exists():
        assert time.monotonic() < deadline, "the embedded PostgreSQL is still running"
        time.sleep(0.2)
    if not broker_was_running:
        assert not embedded.port_is_open("127.0.0.1", embedded.DEV_BROKER_PORT)
    assert (tmp_path / "postgres" / "PG_VERSION").exists()  # data kept for the next run
