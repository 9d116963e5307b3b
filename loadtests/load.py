"""`make load`: a bounded, headless locust session against a running stack.

    make run                 # in one terminal
    make load                # in another: LOAD_RUN_SECONDS=60 LOAD_RECIPIENTS=10000 ...

Steps: check the redirect server and the API answer; get an API key (from
SHORTLINK_API_KEY, or a new `loadtest` account made with `shortlink account
create`, which reaches the same database as `make run`); start the contract-
checking sink (loadtests/sink.py) and point the account's endpoint at it; seed a
campaign (loadtests/seed.py); run locust headless for LOAD_RUN_SECONDS with the
burst shape; then wait until every tap is recorded (the campaign's stats) and
delivered to the sink, and report the click-to-delivery delay; a lost or invalid
click makes it exit 1. Locust's CSV files and HTML report, and
summary.json, go to loadtests/results/.

For a deployed system: SHORTLINK_API_URL=https://api.example.com
SHORTLINK_API_KEY=... LOAD_SINK=none make load (the endpoint stays as it is;
delivery is then checked on the customer's side).
"""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from . import seed

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, not {value!r}") from None


def _get_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our URLs
        return orjson.loads(response.read())


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3):  # noqa: S310 - our URLs
            return True
    except (urllib.error.URLError, OSError):
        return False


def _api_key() -> str:
    key = os.environ.get("SHORTLINK_API_KEY")
    if key:
        return key
    made = subprocess.run(
        [sys.executable, "-m", "shortlink.cli", "account", "create", "--name", "loadtest"],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        raise SystemExit(f"could not create a load-test account: {made.stderr.strip()}")
    api_key: str = orjson.loads(made.stdout)["api_key"]
    return api_key


def read_stats(prefix: Path) -> dict[str, dict[str, float]]:
    """Locust's per-request-name figures from its _stats.csv."""
    rows: dict[str, dict[str, float]] = {}
    with (prefix.parent / f"{prefix.name}_stats.csv").open() as f:
        for row in csv.DictReader(f):
            rows[row["Name"]] = {
                "requests": float(row["Request Count"]),
                "failures": float(row["Failure Count"]),
                "rps": float(row["Requests/s"]),
                "p50_ms": float(row["50%"] or 0),
                "p99_ms": float(row["99%"] or 0),
            }
    return rows


def run_locust(env: dict[str, str], seconds: int, prefix: Path) -> int:
    """Run the locustfile headless for at most `seconds` (+ a grace period)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(HERE / "locustfile.py"),
            "--headless",
            "--run-time",
            f"{seconds}s",
            "--stop-timeout",
            "10",
            "--csv",
            str(prefix),
            "--html",
            f"{prefix}.html",
            "--only-summary",
            "--exit-code-on-error",
            "0",
        ],
        env=env,
        timeout=seconds + 120,
        check=False,
    ).returncode


def wait_for_delivery(
    api_url: str, key: str, campaign: str, sink_port: int, taps: int, timeout: float = 120
) -> tuple[int, dict[str, Any]]:
    """Wait until the campaign's recorded clicks (PostgreSQL, through the stats API)
    cover the taps locust counted and the sink has every recorded click; returns
    (recorded, the sink's stats). Recorded may exceed locust's count by the taps
    answered while locust was stopping its users (sent, but never counted)."""
    request = urllib.request.Request(  # noqa: S310 - our own API's URL
        f"{api_url}/v1/campaigns/{campaign}/stats", headers={"Authorization": f"Bearer {key}"}
    )
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - ours
            recorded = int(orjson.loads(response.read())["total_clicks"])
        delivered: dict[str, Any] = _get_json(f"http://127.0.0.1:{sink_port}/stats")
        done = recorded >= taps and delivered["distinct_clicks"] >= recorded
        if done or time.monotonic() > deadline:
            return recorded, delivered
        time.sleep(1)


def main() -> int:
    redirect_url = os.environ.get("SHORTLINK_REDIRECT_URL", "http://127.0.0.1:8080").rstrip("/")
    api_url = os.environ.get("SHORTLINK_API_URL", "http://127.0.0.1:8081").rstrip("/")
    seconds = _env_int("LOAD_RUN_SECONDS", 60)
    recipients = _env_int("LOAD_RECIPIENTS", 10_000)
    sink_port = _env_int("LOAD_SINK_PORT", 8090)
    use_sink = os.environ.get("LOAD_SINK", "local") != "none"
    for name, url in (("redirect server", redirect_url), ("API", api_url)):
        if not _answers(f"{url}/healthz"):
            sys.stderr.write(f"the {name} does not answer at {url}: start `make run` first\n")
            return 2
    key = _api_key()
    RESULTS.mkdir(exist_ok=True)
    sink: subprocess.Popen[bytes] | None = None
    try:
        sink_url = None
        if use_sink:
            sink = subprocess.Popen(
                [sys.executable, "-m", "loadtests.sink", "--port", str(sink_port)],
                cwd=HERE.parent,
            )
            deadline = time.monotonic() + 20
            while not _answers(f"http://127.0.0.1:{sink_port}/stats"):
                if time.monotonic() > deadline or sink.poll() is not None:
                    sys.stderr.write("the sink did not start\n")
                    return 1
                time.sleep(0.2)
            sink_url = f"http://127.0.0.1:{sink_port}/hook"
        started = time.monotonic()
        campaign = asyncio.run(
            seed.create_campaign(api_url, key, recipients, endpoint_url=sink_url)
        )
        campaign.dump(seed.CAMPAIGN_FILE)
        print(
            f"seeded campaign {campaign.name}: {len(campaign.short_urls):,} links "
            f"in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        prefix = RESULTS / "load"
        env = {
            **os.environ,
            "SHORTLINK_API_URL": api_url,
            "SHORTLINK_API_KEY": key,
            "LOAD_RUN_SECONDS": str(seconds),
            "LOAD_CAMPAIGN_FILE": str(seed.CAMPAIGN_FILE),
        }
        code = run_locust(env, seconds, prefix)
        stats = read_stats(prefix)
        summary: dict[str, Any] = {"campaign": campaign.name, "locust_exit": code, "stats": stats}
        lost = False
        if sink is not None:
            tap = stats.get("tap", {})
            summary["taps"] = int(tap.get("requests", 0) - tap.get("failures", 0))
            summary["recorded"], summary["delivered"] = wait_for_delivery(
                api_url, key, campaign.name, sink_port, summary["taps"]
            )
            lost = (
                summary["recorded"] < summary["taps"]
                or summary["delivered"]["distinct_clicks"] < summary["recorded"]
                or summary["delivered"]["invalid"] > 0
            )
            summary["lost_or_invalid"] = lost
        (RESULTS / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
        print(_report(summary))
        print(f"CSV and HTML report: {prefix}_stats.csv, {prefix}.html")
        return 0 if code == 0 and not lost else 1
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait(10)


def _report(summary: dict[str, Any]) -> str:
    lines = [
        "",
        f"{'request':<40} {'count':>9} {'fail':>6} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}",
    ]
    for name, row in summary["stats"].items():
        lines.append(
            f"{name:<40} {row['requests']:>9.0f} {row['failures']:>6.0f} {row['rps']:>8.1f} "
            f"{row['p50_ms']:>7.0f} {row['p99_ms']:>7.0f}"
        )
    if "delivered" in summary:
        got = summary["delivered"]
        lines += [
            "",
            f"taps answered 302 (as locust counted them): {summary['taps']:,}; recorded in "
            f"PostgreSQL: {summary['recorded']:,}; delivered to the sink: "
            f"{got['distinct_clicks']:,} (contract violations: {got['invalid']})",
            "LOST OR INVALID CLICKS" if summary["lost_or_invalid"] else "no click lost",
            f"click to delivery: p50 {got['latency_ms']['p50']} ms, "
            f"p99 {got['latency_ms']['p99']} ms",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
