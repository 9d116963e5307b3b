"""wrk, the load generator of the redirect benchmarks: one run, and its output read."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .machine import LOAD_CPU, cpu_seconds


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    server_cpu: float = 0.0  # share of one core the server used during the run

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu * 1e6 / self.requests_per_second


def parse_duration_ms(text: str) -> float:
    value = float(re.sub(r"[a-z]+$", "", text))
    unit = re.sub(r"^[0-9.]+", "", text)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def run_wrk(url: str, script: Path, seconds: int, connections: int, server_pid: int) -> WrkResult:
    cpu_before, started = cpu_seconds(server_pid), time.monotonic()
    out = subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CPU,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = parse_wrk(out)
    result.server_cpu = (cpu_seconds(server_pid) - cpu_before) / (time.monotonic() - started)
    return result


def parse_wrk(out: str) -> WrkResult:
    """req/s, p50/p99, requests and errors (socket errors and non-2xx/3xx) of wrk's output."""
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    errors = sum(
        int(n)
        for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out)
        + re.findall(r"Non-2xx or 3xx responses: (\d+)", out)
    )
    return WrkResult(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),  # type: ignore[index]
        p50_ms=parse_duration_ms(percentiles["50"]),
        p99_ms=parse_duration_ms(percentiles["99"]),
        requests=requests,
        errors=errors,
    )
