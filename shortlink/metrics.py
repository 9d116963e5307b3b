"""Prometheus metrics that cost nothing on the request path.

The services keep plain integer counters where the work happens (the cache's
hits, the publisher's published events, ...). Nothing is formatted, locked or
labelled per request: a collector turns those numbers into metric families only
when Prometheus scrapes. Histograms are `Buckets`: a list of counts and a
bisect, no lock (each process is single-threaded asyncio).

A redirect or API server runs several worker processes sharing one port, so a
scrape of that port would reach a random worker. Instead each worker writes its
metrics (text format) to `<dir>/<worker>-<pid>.prom` once a second, and the
supervisor serves their sum on a separate metrics port (REDIRECT_METRICS_PORT,
API_METRICS_PORT), which also keeps /metrics off the internet-facing port. A
dead worker's counters stay in the sum (see WorkerFiles).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import tempfile
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from shortlink.exceptions import ConfigError
from shortlink.supervise import SUPERVISOR

log = logging.getLogger(__name__)

METRICS_DIR_VARIABLE = "SHORTLINK_METRICS_DIR"  # set by the supervisor for its workers
WRITE_INTERVAL = 1.0
# Seconds: lookups take ~0.5 ms, deliveries up to the 10 s timeout.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
DELIVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Buckets:
    """A histogram's counts, without a lock: observe() is a bisect and two additions."""

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def add_to(self, family: HistogramMetricFamily, labels: Sequence[str] = ()) -> None:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        family.add_metric(list(labels), cumulative, self.sum)


class Snapshot(Collector):
    """A collector whose families come from a function, called at scrape time."""

    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families()


def counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    family = CounterMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(name, doc, value=value)


def registry_of(families: Callable[[], Iterable[Metric]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(families))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


# -- worker side ----------------------------------------------------------------


def writer_context(
    registry_key: web.AppKey[CollectorRegistry], worker_index: int
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Write the worker's metrics to the supervisor's directory every second."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        directory = os.environ.get(METRICS_DIR_VARIABLE)
        if not directory:
            yield  # not under a supervisor that serves metrics (tests, metrics off)
            return
        path = Path(directory) / f"{worker_index}-{os.getpid()}.prom"

        def write() -> None:
            staged = path.with_suffix(".tmp")
            staged.write_bytes(render(app[registry_key]))
            staged.replace(path)  # a scrape never reads half a file

        async def loop() -> None:
            while True:
                try:
                    write()
                except OSError as exc:
                    log.warning("could not write metrics", extra={"error": repr(exc)})
                await asyncio.sleep(WRITE_INTERVAL)

        task = app[SUPERVISOR].spawn("metrics-writer", loop)
        yield
        await task.stop()
        with contextlib.suppress(OSError):
            write()  # the final counts

    return context


# -- supervisor side ------------------------------------------------------------


SampleKey = tuple[str, tuple[tuple[str, str], ...]]
# Families whose samples only grow: a dead worker's last values stay in the sum.
_MONOTONIC = frozenset({"counter", "histogram"})


class WorkerFiles(Collector):
    """The sum over the workers' files: counters, gauges and histogram buckets add up.

    Files are named `<worker index>-<pid>.prom`. When a worker has died (its pid
    is gone), its counters and histograms are kept in `retired` and its file is
    removed, so a restarted worker starting again from zero never makes a summed
    counter go down (Prometheus would read that as a reset); its gauges (cache
    entries, buffered clicks) die with it.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self.retired: dict[str, tuple[Metric, dict[SampleKey, float]]] = {}

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        sums: dict[str, dict[SampleKey, float]] = {}
        for name, (family, totals) in self.retired.items():
            families[name] = Metric(family.name, family.documentation, family.type)
            sums[name] = dict(totals)
        for path in sorted(self._directory.glob("*.prom")):
            alive = _process_alive(path.stem)
            try:
                text = path.read_text()
            except OSError:
                continue
            for family in text_string_to_metric_families(text):
                if not alive and family.type not in _MONOTONIC:
                    continue
                if family.name not in families:
                    families[family.name] = Metric(family.name, family.documentation, family.type)
                    sums[family.name] = {}
                totals = sums[family.name]
                retired = None
                if not alive:
                    kept = self.retired.setdefault(family.name, (families[family.name], {}))
                    retired = kept[1]
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    totals[key] = totals.get(key, 0.0) + sample.value
                    if retired is not None:
                        retired[key] = retired.get(key, 0.0) + sample.value
            if not alive:
                with contextlib.suppress(OSError):
                    path.unlink()
        for name, family in families.items():
            for (sample_name, labels), value in sums[name].items():
                family.add_sample(sample_name, dict(labels), value)
            yield family


def _process_alive(stem: str) -> bool:
    """Whether the worker that wrote `<index>-<pid>.prom` still runs."""
    _, _, pid = stem.rpartition("-")
    if not pid.isdigit():
        return True  # not one of ours: sum it, never retire it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve_worker_metrics(host: str, port: int, setting: str) -> Path | None:
    """In the supervisor: a metrics directory for the workers (through the
    environment they inherit) and an HTTP server summing it; None if port is 0."""
    if port == 0:
        return None
    directory = Path(tempfile.mkdtemp(prefix="shortlink-metrics-"))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerFiles(directory))
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror}): "
            f"choose another {setting}, or 0 for no metrics"
        ) from None
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ[METRICS_DIR_VARIABLE] = str(directory)
    log.info("metrics", extra={"url": f"http://{host}:{port}/metrics"})
    return directory
