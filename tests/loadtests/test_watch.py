"""Reading what the services said during a chaos run: log lines, probes, counters."""

from __future__ import annotations

from pathlib import Path

from loadtests.watch import (
    Sample,
    counted,
    failing,
    longest_flat,
    parse_metrics,
    read_logs,
    summarise,
)

FORWARDER_LOG = """\
{"time":"2026-12-01T10:00:00.000+00:00","level":"info","logger":"x","message":"consuming"}
{"time":"2026-12-01T10:00:01.000+00:00","level":"warning","logger":"x","message":"recording a \
batch failed; trying again","error":"ConnectionDoesNotExistError('connection was closed')"}
{"time":"2026-12-01T10:00:02.000+00:00","level":"error","logger":"x","message":"Error handling \
request","exception":"Traceback (most recent call last):\\n  File \\"x.py\\"\\naiohttp.http_\
exceptions.LineTooLong: 400, message:\\n  Got more than 8190 bytes"}
Process redirect-0:
Traceback (most recent call last):
  File "publisher.py", line 268, in _flush_loop
TypeError: str is not valid UTF-8: surrogates not allowed
"""
POSTGRES_LOG = """\
2026-12-01 10:00:03.250 UTC [123] ERROR:  cannot execute INSERT in a read-only transaction
2026-12-01 10:00:03.300 UTC [123] STATEMENT:  INSERT INTO clicks ...
2026-12-01 10:00:04.000 UTC [99] LOG:  database system is ready to accept connections
"""
T0 = 1796119200.0  # 2026-12-01T10:00:00Z


def test_read_logs_keeps_warnings_errors_tracebacks_and_postgres_errors(tmp_path: Path) -> None:
    """Warnings and worse become timed entries naming the error class; an uncaught traceback
    takes the time of the line before it; PostgreSQL's ERROR lines are read, its LOG lines
    are not."""
    (tmp_path / "forwarder.log").write_text(FORWARDER_LOG)
    (tmp_path / "pg.log").write_text(POSTGRES_LOG)
    entries = read_logs({"forwarder": tmp_path / "forwarder.log", "postgres": tmp_path / "pg.log"})
    assert [(e.at, e.service, e.level, e.message) for e in entries] == [
        (
            T0 + 1,
            "forwarder",
            "warning",
            "recording a batch failed; trying again (ConnectionDoesNotExistError)",
        ),
        (
            T0 + 2,
            "forwarder",
            "error",
            "Error handling request (aiohttp.http_exceptions.LineTooLong)",
        ),
        (
            T0 + 2,
            "forwarder",
            "traceback",
            "uncaught TypeError: str is not valid UTF-8: surrogates not allowed",
        ),
        (T0 + 3.25, "postgres", "error", "cannot execute INSERT in a read-only transaction"),
    ]
    assert summarise(entries, T0, T0 + 10, limit=2) == [
        "forwarder: recording a batch failed; trying again (ConnectionDoesNotExistError)",
        "forwarder: Error handling request (aiohttp.http_exceptions.LineTooLong)",
    ]


def sample(at: float, recorded: float, forwarder_ready: int = 200) -> Sample:
    return Sample(
        at=at,
        healthz={"redirect": 200, "forwarder": 200},
        readyz={"redirect": (200, '{"spooling":false}'), "forwarder": (forwarder_ready, "")},
        metrics={"forwarder": {"forwarder_clicks_recorded_total": recorded}},
        workers=[1, 2],
    )


def test_probes_and_counters_over_a_window() -> None:
    """A readiness probe failing for two samples counts their time; a counter that stops
    growing for 3 s is a 3 s stall."""
    samples = [
        sample(0, 10),
        sample(1, 20, 503),
        sample(2, 20, 503),
        sample(3, 20),
        sample(4, 20),
        sample(5, 30),
    ]
    assert failing(samples, 0, 10) == {"forwarder /readyz 503": 2.0}
    assert longest_flat(samples, "forwarder", "forwarder_clicks_recorded_total", 0, 10) == 3.0


def test_counted_adds_up_a_counter_across_a_restart() -> None:
    """A counter's growth from 0, where a value below the last is a new process counting
    from 0 again; None when no sample has the counter."""
    name = "forwarder_clicks_recorded_total"
    samples = [sample(0, 2), sample(1, 5), sample(2, 1), sample(3, 4)]  # restarted at 2
    assert counted(samples, "forwarder", name) == 9
    assert counted(samples, "forwarder", "forwarder_dead_events_total") is None


def test_parse_metrics_names_samples_with_their_labels() -> None:
    """Prometheus text becomes one entry per sample, labels in the key; garbage is empty."""
    text = (
        "# TYPE forwarder_delivery_attempts counter\n"
        'forwarder_delivery_attempts_total{result="delivered"} 7.0\n'
    )
    assert parse_metrics(text) == {'forwarder_delivery_attempts_total{result="delivered"}': 7.0}
    assert parse_metrics("<html>not metrics</html>") == {}
