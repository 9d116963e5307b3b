"""`make bench-api`: bulk link creation, bulk message rewriting, and stats with 10M clicks.

The API runs as one worker pinned to CPU 0; PostgreSQL (embedded, unless
DATABASE_URL is set) and this client run on CPU 1.

1. POST /v1/links with 100,000 recipients (one link each), 3 times: seconds per request.
2. POST /v1/messages, track mode, 100,000 recipients, 3 times: seconds per request.
3. 10,000,000 clicks put in the clicks table, spread over the campaign's links
   and its first 30 days (and the campaign counters and the per-minute rollup
   made to match, as the forwarder keeps them); then GET /v1/campaigns/{id}/stats
   50 times: p50 / p99 / max milliseconds.
4. The dashboard's data with those 10M clicks, 50 times each: GET /v1/campaigns,
   the campaigns page, the campaign page (figures, both series, histogram,
   breakdowns, first recipients page), its recipients searched by phone number
   and its next recipients page; then both CSV files downloaded once each (time,
   size, and the API process's peak memory before and after).
5. POST /v1/messages, first mode, 200,000 phone numbers as people write them
   (also alone: --only-phones).
6. Rendering (issue 21): POST /v1/messages, track mode, 200,000 recipients with a
   470-character body holding an emoji against the same request with a 30-character
   ASCII body, alternating, --runs times each: the ratio of the medians (target at
   most 1.2), and the latency of GET /v1/links/{token}, sent to the same worker 50
   times a second while the big requests run (target p99 under 100 ms), after one
   untimed request and ANALYZE links; then how fast the requests that must be refused
   (413/422) are: a huge template value, an answer over MAX_RESPONSE_BYTES, a body
   over MAX_REQUEST_BYTES. Run last (its 1.4 million links would change
   what the parts above measure); also alone: --only-render.

BENCH_API_ARGS passes options through make (`make bench-api BENCH_API_ARGS=--only-render`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import multiprocessing
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import phonenumbers

from shortlink import accounts, schema, validation
from shortlink.dev import embedded

from .databases import create_database, drop_database
from .machine import LOAD_CPU, SERVER_CPU, process
from .results import RESULTS_DOC, ROOT, write_section


async def timed_post(url: str, key: str, body: bytes) -> tuple[float, int, int]:
    """Seconds, status and response size of one POST."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        started = time.perf_counter()
        async with session.post(
            url,
            data=io.BytesIO(body),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        ) as response:
            payload = await response.read()
        return time.perf_counter() - started, response.status, len(payload)


async def fill_clicks(database_url: str, account_id: int, campaign: str, count: int) -> float:
    """Put `count` clicks of the campaign in the table, and counters to match; seconds taken."""
    conn = await asyncpg.connect(database_url)
    started = time.perf_counter()
    try:
        link_ids = [
            row["id"]
            for row in await conn.fetch(
                "SELECT id FROM links WHERE account_id = $1 AND client_identifier = $2",
                account_id,
                campaign,
            )
        ]
        # The campaign began 30 days ago; its clicks fall over those 30 days.
        await conn.execute(
            """
            UPDATE campaign_stats SET created_at = now() - interval '30 days'
            WHERE account_id = $1 AND campaign = $2
            """,
            account_id,
            campaign,
        )
        step = 1_000_000
        for first in range(0, count, step):
            await conn.execute(
                """
                INSERT INTO clicks (event_id, link_id, account_id, clicked_at, method, user_agent,
                                    client_ip, browser, os, device_type, is_bot, phone_number,
                                    client_identifier, target_url)
                SELECT gen_random_uuid(), ($1::bigint[])[1 + g % cardinality($1::bigint[])], $2,
                       now() - interval '30 days' + ((g % 2592000) || ' seconds')::interval, 'GET',
                       'Mozilla/5.0 (iPhone)', '203.0.113.7', 'Mobile Safari', 'iOS',
                       CASE WHEN g % 10 = 0 THEN 'bot' ELSE 'mobile' END, g % 10 = 0,
                       '4477' || lpad((g % 100000)::text, 8, '0'), $3, 'https://shop.example/'
                FROM generate_series($4::bigint, $5::bigint) AS g
                """,
                link_ids,
                account_id,
                campaign,
                first,
                min(first + step, count) - 1,
            )
        await conn.execute(
            """
            UPDATE campaign_stats SET total_clicks = s.people, bot_clicks = s.bots,
                                      unique_clicks = least(s.people, campaign_stats.links)
            FROM (SELECT count(*) FILTER (WHERE NOT is_bot) AS people,
                         count(*) FILTER (WHERE is_bot) AS bots
                  FROM clicks WHERE account_id = $1 AND client_identifier = $2) AS s
            WHERE account_id = $1 AND campaign = $2
            """,
            account_id,
            campaign,
        )
        await conn.execute(
            """
            INSERT INTO campaign_breakdown (account_id, campaign, dimension, value, clicks)
            SELECT $1, $2, d.dimension, d.value, d.clicks FROM (
                SELECT 'browser' AS dimension, browser AS value, count(*) AS clicks FROM clicks
                WHERE account_id = $1 AND client_identifier = $2 AND NOT is_bot GROUP BY browser
                UNION ALL
                SELECT 'os', os, count(*) FROM clicks
                WHERE account_id = $1 AND client_identifier = $2 AND NOT is_bot GROUP BY os
                UNION ALL
                SELECT 'device_type', device_type, count(*) FROM clicks
                WHERE account_id = $1 AND client_identifier = $2 AND NOT is_bot GROUP BY device_type
            ) AS d
            ON CONFLICT (account_id, campaign, dimension, value)
            DO UPDATE SET clicks = excluded.clicks
            """,
            account_id,
            campaign,
        )
        await conn.execute(
            """
            INSERT INTO campaign_first_click (account_id, campaign, bucket, links)
            SELECT $1, $2, b, 1000 FROM generate_series(60, 240) AS b
            ON CONFLICT DO NOTHING
            """,
            account_id,
            campaign,
        )
        await conn.execute(
            """
            INSERT INTO first_clicks (link_id, clicked_at)
            SELECT id, created_at + interval '5 minutes' FROM links
            WHERE account_id = $1 AND client_identifier = $2
            ON CONFLICT DO NOTHING
            """,
            account_id,
            campaign,
        )
        await conn.execute(
            """
            INSERT INTO campaign_minutes (account_id, campaign, minute, taps, first_taps,
                                          bot_taps, first_at, last_at)
            SELECT $1, $2, date_trunc('minute', clicked_at), count(*) FILTER (WHERE NOT is_bot),
                   0, count(*) FILTER (WHERE is_bot), min(clicked_at), max(clicked_at)
            FROM clicks WHERE account_id = $1 AND client_identifier = $2 GROUP BY 3
            """,
            account_id,
            campaign,
        )
        await conn.execute("ANALYZE clicks")
        await conn.execute("ANALYZE links")
        await conn.execute("ANALYZE campaign_minutes")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def stats_latencies(
    url: str, key: str, calls: int, headers: dict[str, str] | None = None
) -> list[float]:
    """Milliseconds per GET, sorted; with `headers`, those instead of the Bearer key."""
    latencies = []
    sent = headers if headers is not None else {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as session:
        for _ in range(calls):
            started = time.perf_counter()
            async with session.get(url, headers=sent, allow_redirects=False) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url} answered {response.status}")
            latencies.append((time.perf_counter() - started) * 1000)
    return sorted(latencies)


async def dashboard_cookie(base: str, key: str) -> str:
    """Sign in to the dashboard with the key; the Cookie header of the session."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        async with session.post(
            f"{base}/dashboard/signin",
            data={"api_key": key},
            headers={"Sec-Fetch-Site": "same-origin"},
            allow_redirects=False,
        ) as response:
            if response.status != 303:
                raise RuntimeError(f"sign-in answered {response.status}")
            return f"shortlink_session={response.cookies['shortlink_session'].value}"


async def next_page_url(url: str, cookie: str) -> str:
    """The campaign page's 'Next page' link (a recipients keyset cursor)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Cookie": cookie}) as response:
            html = await response.text()
    [found] = re.findall(r'<a href="([^"]+)" id="next-page">', html)
    return found.replace("&amp;", "&")


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def download(url: str, key: str) -> tuple[float, int, int]:
    """Seconds, bytes and rows (lines) of one streamed CSV download."""
    started = time.perf_counter()
    size = lines = 0
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(url, headers={"Authorization": f"Bearer {key}"}) as response:
            if response.status != 200:
                raise RuntimeError(f"{url} answered {response.status}")
            async for chunk in response.content.iter_chunked(1 << 20):
                size += len(chunk)
                lines += chunk.count(b"\r\n")
    return time.perf_counter() - started, size, lines


# Issue 21's pair: the same track-mode request, a 30-character ASCII body and a
# 470-character one with an emoji (so UCS-2, with a surrogate pair to place in segments).
RENDER_DIRECTIVE = '#track("https://ab.co/x")'
RENDER_SHORT = "Sale " + RENDER_DIRECTIVE
_FILLER = (
    " Autumn sale: 30% off everything in store and online until Sunday night, with free"
    " delivery on orders over 20 pounds and returns within 60 days."
)
RENDER_LONG = ("Hello \U0001f342 " + RENDER_DIRECTIVE + _FILLER * 4)[:469] + "."
PROBE_EVERY = 0.02  # seconds between the small requests sent during a big one


def probe_latencies(url: str, key: str, ready: Event, stop: Event, out: Connection) -> None:
    """In a process of its own (so that reading the big answer does not delay it): GET `url`
    every PROBE_EVERY seconds, one at a time, until `stop`; send back the milliseconds."""

    async def run() -> list[float]:
        latencies: list[float] = []
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                started = time.perf_counter()
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")
                latencies.append((time.perf_counter() - started) * 1000)
                ready.set()
                await asyncio.sleep(PROBE_EVERY)
        return latencies

    out.send(asyncio.run(run()))


async def streamed_post(url: str, key: str, body: bytes) -> tuple[float, int, int]:
    """Seconds, status and size of one POST whose answer is counted, not kept."""
    size = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        started = time.perf_counter()
        async with session.post(
            url,
            data=io.BytesIO(body),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        ) as response:
            async for chunk in response.content.iter_chunked(1 << 20):
                size += len(chunk)
        return time.perf_counter() - started, response.status, size


def post_with_probes(
    url: str, key: str, body: bytes, probe_url: str
) -> tuple[float, int, int, list[float]]:
    """streamed_post, while another process sends GET `probe_url` (probe_latencies); also
    the probes' milliseconds."""
    spawn = multiprocessing.get_context("spawn")
    ready, stop = spawn.Event(), spawn.Event()
    receiver, sender = spawn.Pipe(duplex=False)
    prober = spawn.Process(target=probe_latencies, args=(probe_url, key, ready, stop, sender))
    prober.start()
    sender.close()  # the child's copy is the only one: recv() fails if the child dies
    try:
        if not ready.wait(60):
            raise RuntimeError("the probe process did not start")
        seconds, status, size = asyncio.run(streamed_post(url, key, body))
    finally:
        stop.set()
    latencies: list[float] = receiver.recv()
    prober.join()
    return seconds, status, size, latencies


def percentile(values: list[float], share: float) -> float:
    """The value below which `share` of the sorted `values` fall (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def analyze_links(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("ANALYZE links")
    finally:
        await conn.close()


def render_report(base: str, key: str, database_url: str, recipients: int, runs: int) -> list[str]:
    """Part 6: the long body against the short one, and small requests meanwhile.

    One untimed request first, then ANALYZE links, as autovacuum does in service: with
    the statistics of a nearly empty table, PostgreSQL's generic plan for the probe's
    token lookup is a scan of the table, which a concurrent 200,000-row insert makes
    20 to 200 ms (a young database's trait, not the API's)."""
    probe_url = f"{base}/v1/links/{asyncio.run(probe_token(base, key))}"
    phones = [f"4478{i:08d}" for i in range(recipients)]
    bodies = {
        name: orjson.dumps(
            {"to": phones, "body": text, "mode": "track", "client_identifier": f"bench-{name}"}
        )
        for name, text in (("short", RENDER_SHORT), ("long", RENDER_LONG))
    }
    seconds, status, _ = asyncio.run(streamed_post(base + "/v1/messages", key, bodies["short"]))
    if status != 201:
        raise RuntimeError(f"/v1/messages answered {status}")
    asyncio.run(analyze_links(database_url))
    print(f"warm-up: {seconds:.2f} s, then ANALYZE links", flush=True)
    times: dict[str, list[float]] = {"short": [], "long": []}
    probes: dict[str, list[float]] = {"short": [], "long": []}
    sizes: dict[str, int] = {}
    for run in range(1, runs + 1):
        for name in ("short", "long"):
            seconds, status, size, latencies = post_with_probes(
                base + "/v1/messages", key, bodies[name], probe_url
            )
            if status != 201:
                raise RuntimeError(f"/v1/messages answered {status}")
            times[name].append(seconds)
            probes[name] += latencies
            sizes[name] = size
            print(
                f"run {run} {name} body: {seconds:.2f} s ({size / 1e6:.0f} MB answer); "
                f"GET p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms "
                f"({len(latencies)} calls)",
                flush=True,
            )
    ratio = statistics.median(times["long"]) / statistics.median(times["short"])
    everything = probes["short"] + probes["long"]
    refused = asyncio.run(refusals(base + "/v1/messages", key, recipients))
    return [
        f"- **POST /v1/messages, track mode, {recipients:,} recipients, a 470-character body "
        f"with an emoji against a 30-character ASCII one** (issue 21, target at most 1.2x): "
        f"median **{statistics.median(times['long']):.2f} s** "
        f"(runs: {', '.join(f'{s:.2f}' for s in times['long'])}; "
        f"{sizes['long'] / 1e6:.0f} MB answer) against "
        f"**{statistics.median(times['short']):.2f} s** "
        f"(runs: {', '.join(f'{s:.2f}' for s in times['short'])}; "
        f"{sizes['short'] / 1e6:.0f} MB answer): **{ratio:.2f}x**",
        f"- **GET /v1/links/{{token}} to the same worker meanwhile** (every "
        f"{PROBE_EVERY * 1000:.0f} ms, target p99 under 100 ms): p50 "
        f"{percentile(everything, 0.5):.1f} ms, **p99 {percentile(everything, 0.99):.1f} ms**, "
        f"max {max(everything):.1f} ms over {len(everything):,} calls (during the long "
        f"bodies: p99 {percentile(probes['long'], 0.99):.1f} ms, max "
        f"{max(probes['long']):.1f} ms)",
        "- **Refused at once** (target within a second; slowest of 3 each): "
        + "; ".join(f"{what}: {status} in {seconds:.2f} s" for what, status, seconds in refused),
    ]


async def refusals(url: str, key: str, recipients: int) -> list[tuple[str, int, float]]:
    """The issue's requests that must be refused within a second: (what, status, slowest
    of 3 seconds) for a 1,000,000-character template value for 5,000 recipients, values
    within their limits whose answer would pass MAX_RESPONSE_BYTES, and a body over
    MAX_REQUEST_BYTES."""
    template = {"body": "{#var#} {#var#}", "mode": "template"}
    cases = [
        (
            "a 1,000,000-character value, 5,000 recipients",
            {
                **template,
                "to": [f"4478{i:08d}" for i in range(5_000)],
                "vars": ["https://ab.co/a", "A" * 1_000_000],
            },
        ),
        (
            f"2,048-character values, {recipients:,} recipients (answer over 256 MiB)",
            {
                **template,
                "to": [f"4478{i:08d}" for i in range(recipients)],
                "vars": ["https://ab.co/a", "B" * 2_048],
            },
        ),
        (
            "a 65 MiB body",
            {
                **template,
                "to": ["447800000001"],
                "vars": ["https://ab.co/a"],
                "padding": "C" * (65 << 20),
            },
        ),
    ]
    results = []
    for what, request in cases:
        body = orjson.dumps(request)
        slowest, status = 0.0, 0
        for _ in range(3):
            seconds, status, _size = await timed_post(url, key, body)
            slowest = max(slowest, seconds)
        if status not in (413, 422):
            raise RuntimeError(f"{what}: /v1/messages answered {status}")
        results.append((what, status, slowest))
    return results


async def probe_token(base: str, key: str) -> str:
    """The token of a fresh link of the account, for the probes to read."""
    body = orjson.dumps({"url": "https://ab.co/probe", "recipients": [{}]})
    async with aiohttp.ClientSession() as session:
        async with session.post(
            base + "/v1/links",
            data=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        ) as response:
            if response.status != 201:
                raise RuntimeError(f"/v1/links answered {response.status}")
            made = orjson.loads(await response.read())
    return str(made["links"][0]["token"])


def written_phones(count: int) -> list[str]:
    """`count` phone numbers of four countries, in the formats people type."""
    shapes = (
        lambda i: f"+44 (0)7700 {i % 1_000_000:06d}",
        lambda i: f"+1 (415) {i // 10_000 % 1_000:03d}-{i % 10_000:04d}",
        lambda i: f"0049 30 {i % 100_000_000:08d}",
        lambda i: f"91 98{i % 100_000_000:08d}",
    )
    return [shapes[i % len(shapes)](i) for i in range(count)]


def phone_check_seconds(numbers: list[str]) -> tuple[float, float]:
    """Seconds to check all `numbers`: shortlink.validation, then phonenumbers (scaled)."""
    started = time.perf_counter()
    for number in numbers:
        validation.phone_number(number)
    ours = time.perf_counter() - started
    # phonenumbers needs the + to read a number without a region.
    sample = ["+" + n.removeprefix("00").removeprefix("+") for n in numbers[:20_000]]
    started = time.perf_counter()
    for number in sample:
        if not phonenumbers.is_possible_number(phonenumbers.parse(number)):
            raise RuntimeError(f"phonenumbers refuses {number!r}")
    library = (time.perf_counter() - started) * len(numbers) / len(sample)
    return ours, library


def phones_report(base: str, key: str, count: int) -> list[str]:
    """Part 5: the normaliser alone, phonenumbers for comparison, one big request."""
    numbers = written_phones(count)
    ours, library = phone_check_seconds(numbers)
    print(f"{count:,} numbers: {ours:.2f} s here, {library:.2f} s by phonenumbers", flush=True)
    body = orjson.dumps(
        {
            "to": numbers,
            "body": "Autumn sale: 30% off at shop.example.com/autumn until Sunday. STOP to opt out",
            "mode": "first",
            "client_identifier": "bench-phones",
        }
    )
    seconds, status, size = asyncio.run(timed_post(base + "/v1/messages", key, body))
    if status != 201:
        raise RuntimeError(f"/v1/messages answered {status}")
    print(f"phones messages: {seconds:.2f} s ({size / 1e6:.1f} MB answer)", flush=True)
    return [
        f"- **{count:,} phone numbers as people write them** (`+44 (0)7700 900123`, "
        f"`+1 (415) 555-0100`, ...), normalised and length-checked in one process: "
        f"**{ours:.2f} s** ({ours / count * 1e6:.1f} us a number) by shortlink.validation's "
        f"expression from phonenumbers' metadata; phonenumbers.parse + is_possible_number "
        f"would take {library:.2f} s ({library / count * 1e6:.1f} us a number)",
        f"- **POST /v1/messages, first mode (a bare domain), {count:,} such recipients**: "
        f"**{seconds:.2f} s** ({size / 1e6:.0f} MB answer)",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clicks", type=int, default=10_000_000)
    parser.add_argument("--phone-recipients", type=int, default=200_000)
    parser.add_argument("--only-phones", action="store_true", help="run part 5 alone")
    parser.add_argument("--render-recipients", type=int, default=200_000)
    parser.add_argument("--only-render", action="store_true", help="run part 6 alone")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    python = sys.executable
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shortlink-api-")))
        server_url = os.environ.get("DATABASE_URL")
        if server_url is None:
            server_url = embedded.ensure_postgres(work)
            stack.callback(embedded.stop_postgres, work)  # before its folder is removed
            for pid in subprocess.run(
                ["pgrep", "-f", str(work / "postgres")], capture_output=True, text=True, check=False
            ).stdout.split():
                subprocess.run(["taskset", "-apc", LOAD_CPU, pid], capture_output=True, check=False)
        database = f"shortlink_apibench_{os.getpid()}"
        database_url = create_database(server_url, database)
        stack.callback(drop_database, server_url, database)

        async def prepare() -> tuple[int, str]:
            conn = await asyncpg.connect(database_url)
            try:
                await schema.migrate(conn)
                account = await accounts.create_account(conn, "bench")
                return account.account_id, account.api_key
            finally:
                await conn.close()

        account_id, key = asyncio.run(prepare())
        port = embedded.free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SHORT_DOMAIN": "tx1.in",
            "LOG_LEVEL": "WARNING",
            "DASHBOARD_ENABLED": "true",
            "DASHBOARD_SECRET": "bench-only-dashboard-secret-0123456789",
            # The benchmark's key makes more requests a minute than the default limit
            # allows; each is still counted (the limiter's cost is in the figures).
            "API_RATE_LIMIT_PER_MINUTE": "1000000",
        }
        api = stack.enter_context(
            process(
                [
                    "taskset",
                    "-c",
                    SERVER_CPU,
                    python,
                    "-m",
                    "shortlink.cli",
                    "api",
                    "--workers",
                    "1",
                    "--port",
                    str(port),
                ],
                env,
            )
        )
        while not embedded.port_is_open("127.0.0.1", port):
            time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        if args.only_render:
            render_lines = render_report(base, key, database_url, args.render_recipients, args.runs)
            report = "\n".join(
                [
                    f"## `make bench-api` (--only-render), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
                    "",
                    f"`make bench-api` part 6 (`--only-render`) on {platform.node()} "
                    f"({os.cpu_count()} CPUs, Python {platform.python_version()}): one API "
                    f"worker on CPU {SERVER_CPU}, PostgreSQL (embedded) and the client on CPU "
                    f"{LOAD_CPU}; {args.runs} runs each, seconds per request from sending to "
                    "the last byte of the answer.",
                    "",
                    *render_lines,
                    "",
                ]
            )
            print(report)
            if not args.no_write:
                write_section(report)
            return 0
        phone_lines = phones_report(base, key, args.phone_recipients)
        if args.only_phones:
            report = "\n".join(
                [
                    f"## `make bench-api` (--only-phones), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
                    "",
                    f"`make bench-api` part 5 (`--only-phones`) on {platform.node()} "
                    f"({os.cpu_count()} CPUs, Python {platform.python_version()}): one API "
                    f"worker on CPU {SERVER_CPU}, PostgreSQL (embedded) and the client on CPU "
                    f"{LOAD_CPU}.",
                    "",
                    *phone_lines,
                    "",
                ]
            )
            print(report)
            if not args.no_write:
                write_section(report)
            return 0
        phones = [f"4477{i:08d}" for i in range(args.recipients)]
        links_body = orjson.dumps(
            {
                "url": "https://shop.example.com/autumn-sale?utm_source=sms",
                "recipients": [
                    {"phone_number": p, "client_ref": f"msg-{i}"} for i, p in enumerate(phones)
                ],
                "client_identifier": "bench",
            }
        )
        messages_body = orjson.dumps(
            {
                "to": phones,
                "body": 'Autumn sale: 30% off everything until Sunday! #track("https://shop.'
                'example.com/autumn-sale?utm_source=sms") Reply STOP to opt out',
                "mode": "track",
                "client_identifier": "bench-messages",
            }
        )
        results: dict[str, list[float]] = {"links": [], "messages": []}
        for run in range(1, args.runs + 1):
            for name, path, body in (
                ("links", "/v1/links", links_body),
                ("messages", "/v1/messages", messages_body),
            ):
                seconds, status, size = asyncio.run(timed_post(base + path, key, body))
                if status != 201:
                    raise RuntimeError(f"{path} answered {status}")
                results[name].append(seconds)
                print(f"run {run} {name}: {seconds:.2f} s ({size / 1e6:.1f} MB answer)", flush=True)
        print(f"putting {args.clicks:,} clicks in the table ...", flush=True)
        fill_seconds = asyncio.run(fill_clicks(database_url, account_id, "bench", args.clicks))
        print(f"  took {fill_seconds:.0f} s", flush=True)
        latencies = asyncio.run(stats_latencies(f"{base}/v1/campaigns/bench/stats", key, 50))
        cookie = asyncio.run(dashboard_cookie(base, key))
        page = f"{base}/dashboard/campaigns/bench"
        targets = [
            ("GET /v1/campaigns", f"{base}/v1/campaigns", None),
            ("campaigns page", f"{base}/dashboard/campaigns", cookie),
            ("campaign page", page, cookie),
            ("campaign page, recipients by phone", f"{page}?phone=447700001", cookie),
            (
                "campaign page, next recipients page",
                base + asyncio.run(next_page_url(page, cookie)),
                cookie,
            ),
        ]
        pages: list[tuple[str, list[float]]] = []
        for name, url, with_cookie in targets:
            headers = {"Cookie": with_cookie} if with_cookie else None
            pages.append((name, asyncio.run(stats_latencies(url, key, 50, headers))))
            print(f"{name}: p50 {pages[-1][1][25]:.1f} ms", flush=True)
        rss_before = peak_rss_mib(api.pid)
        exports = []
        for what in ("recipients", "clicks"):
            seconds, size, lines = asyncio.run(
                download(f"{base}/v1/campaigns/bench/{what}.csv", key)
            )
            exports.append((what, seconds, size, lines - 1))
            print(
                f"{what}.csv: {lines - 1:,} rows, {size / 1e6:.0f} MB, {seconds:.1f} s", flush=True
            )
        rss_after = peak_rss_mib(api.pid)
        # Last, so that its 1.4 million links do not change what the parts above measure.
        render_lines = render_report(base, key, database_url, args.render_recipients, args.runs)
    report = "\n".join(
        [
            f"## `make bench-api`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"`make bench-api` on {platform.node()} ({os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}): one API worker on CPU {SERVER_CPU}, PostgreSQL "
            f"(embedded) and the client on CPU {LOAD_CPU}; {args.runs} runs each, seconds per "
            "request from sending to the last byte of the answer.",
            "",
            f"- **POST /v1/links, {args.recipients:,} recipients**: median "
            f"**{statistics.median(results['links']):.2f} s** "
            f"(runs: {', '.join(f'{s:.2f}' for s in results['links'])})",
            f"- **POST /v1/messages, track mode, {args.recipients:,} recipients**: median "
            f"**{statistics.median(results['messages']):.2f} s** "
            f"(runs: {', '.join(f'{s:.2f}' for s in results['messages'])})",
            *phone_lines,
            *render_lines,
            f"- **GET /v1/campaigns/{{id}}/stats with {args.clicks:,} clicks in the table**: "
            f"p50 **{latencies[len(latencies) // 2]:.1f} ms**, p99 {latencies[-1]:.1f} ms "
            f"over {len(latencies)} calls (counters, not a scan of clicks)",
            f"- **Dashboard data with the same {args.clicks:,} clicks** (50 calls each, ms to the "
            "last byte):",
            *[
                f"  - {name}: p50 **{values[len(values) // 2]:.1f} ms**, p99 {values[-1]:.1f} ms"
                for name, values in pages
            ],
            *[
                f"- **{what}.csv**: {rows:,} rows, {size / 1e6:,.0f} MB in {seconds:.1f} s "
                f"({rows / seconds:,.0f} rows/s)"
                for what, seconds, size, rows in exports
            ],
            f"- API process peak memory (VmHWM): {rss_before:.0f} MiB before the CSV downloads, "
            f"{rss_after:.0f} MiB after (streamed in batches of 5,000 rows)",
            "",
        ]
    )
    print(report)
    if not args.no_write:
        write_section(report)
        print(f"written to {RESULTS_DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
