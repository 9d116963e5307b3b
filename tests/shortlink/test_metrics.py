"""Metrics: worker files summed by the supervisor, and a taken port is a clear error."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric

from shortlink.metrics import Buckets, WorkerFiles, counter, gauge, registry_of, render
from shortlink.serve import EXIT_CONFIG
from tests.infra import metric_samples


def test_worker_files_add_up(tmp_path: Path) -> None:
    """Counters and histogram buckets of two workers are summed sample by sample."""
    for worker, (hits, latencies) in enumerate(((3, [0.0004, 0.2]), (5, [0.003]))):
        buckets = Buckets()
        for value in latencies:
            buckets.observe(value)

        def families(hits: int = hits, buckets: Buckets = buckets) -> list[Metric]:
            histogram = HistogramMetricFamily("lookup_seconds", "lookups")
            buckets.add_to(histogram)
            return [counter("hits", "hits", hits), histogram]

        (tmp_path / f"{worker}-{os.getpid()}.prom").write_bytes(render(registry_of(families)))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerFiles(tmp_path))
    found = metric_samples(render(registry).decode())
    assert found["hits_total", ()] == 8
    assert found["lookup_seconds_count", ()] == 3
    assert found["lookup_seconds_bucket", (("le", "0.0005"),)] == 1
    assert found["lookup_seconds_bucket", (("le", "0.005"),)] == 2
    assert found["lookup_seconds_bucket", (("le", "+Inf"),)] == 3
    assert abs(found["lookup_seconds_sum", ()] - 0.2034) < 1e-9


def dead_pid() -> int:
    """The pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_restarted_workers_counters_never_go_down(tmp_path: Path) -> None:
    """A dead worker's counters and histograms stay in the sum (its gauges do not), so the
    summed counter keeps growing when its replacement starts again from zero."""

    def write(name: str, hits: int, entries: int) -> None:
        def families() -> list[Metric]:
            return [counter("hits", "hits", hits), gauge("entries", "entries", entries)]

        (tmp_path / f"{name}.prom").write_bytes(render(registry_of(families)))

    collector = WorkerFiles(tmp_path)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    write(f"0-{os.getpid()}", 7, 100)
    write(f"1-{dead_pid()}", 5, 40)  # worker 1 wrote its last counts and died
    first = metric_samples(render(registry).decode())
    assert (first["hits_total", ()], first["entries", ()]) == (12, 100)
    write(f"1-{os.getppid()}", 1, 3)  # its replacement, alive, starting from zero
    second = metric_samples(render(registry).decode())
    assert (second["hits_total", ()], second["entries", ()]) == (13, 103)
    assert sorted(p.name for p in tmp_path.glob("*.prom")) == sorted(
        [f"0-{os.getpid()}.prom", f"1-{os.getppid()}.prom"]
    )


def test_taken_metrics_port_stops_the_server_with_a_clear_message(database_url: str) -> None:
    """A metrics port already in use: exit EX_CONFIG, naming the setting to change."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "shortlink.cli", "api", "--workers", "1", "--port", "0"],
            env={
                **os.environ,
                "DATABASE_URL": database_url,
                "SHORT_DOMAIN": "tx1.in",
                "API_METRICS_PORT": str(port),
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == EXIT_CONFIG
    assert "API_METRICS_PORT" in result.stderr
