"""The click journal: records on a shared mapping, released in order, recovered after a kill."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from shortlink import clickevent
from shortlink.dev import embedded
from shortlink.redirect.app import create_app, make_handler
from shortlink.redirect.config import RedirectConfig
from shortlink.redirect.journal import HEADER, MIN_BYTES, Journal, recover
from shortlink.redirect.publisher import PUBLISHER, ClickPublisher
from shortlink.redirect.spool import Spool
from shortlink.supervise import Supervisor
from tests.clicks import clicks, make_links
from tests.infra import consume, running, wait_until

_IDS = clickevent.EventIds()


def line(n: int, size: int = 40) -> bytes:
    """A journaled event: token `tok<n>`, clicked `n` ms after a fixed time, a user agent
    of `size` characters."""
    [event_id] = _IDS.take(1, 1_700_000_000_000)
    facts: clickevent.ClickFacts = (
        f"tok{n}",
        n + 1,
        1,
        "https://example.com/",
        None,
        None,
        None,
        1_600_000_000_000,
        1_700_000_000_000 + n,
        "v" * size,
        None,
        None,
        "GET",
        False,
    )
    return clickevent.encode(event_id, facts)


def numbers(path: Path) -> list[int]:
    return [int(key[3:]) for key, _, _ in recover(path)]


def test_unreleased_records_are_recovered_in_order(tmp_path: Path) -> None:
    """Records appended and not released are what `recover` returns, in order, parsed."""
    path = tmp_path / "j.journal"
    journal = Journal(path, MIN_BYTES)
    for n in range(5):
        assert journal.append(line(n))
    records = recover(path)
    assert records[0][:2] == (b"tok0", 1_700_000_000_000)
    assert clickevent.decode(records[0][2]).user_agent == "v" * 40
    assert numbers(path) == [0, 1, 2, 3, 4]
    journal.close()


def test_a_released_batch_leaves_only_when_every_earlier_one_is_released(tmp_path: Path) -> None:
    """Batches released out of order move the tail only past a released prefix."""
    path = tmp_path / "j.journal"
    journal = Journal(path, MIN_BYTES)
    journal.append(line(0))
    first = journal.cut()
    journal.append(line(1))
    second = journal.cut()
    journal.append(line(2))
    journal.release(second)
    assert numbers(path) == [0, 1, 2]
    journal.release(first)
    assert numbers(path) == [2]
    assert journal.pending_bytes > 0
    journal.release(journal.cut())
    assert numbers(path) == []
    assert journal.pending_bytes == 0
    journal.close()


def test_the_ring_goes_round_and_refuses_what_does_not_fit(tmp_path: Path) -> None:
    """Appends wrap to the start once earlier records are released; a full ring says False
    and keeps what it holds."""
    path = tmp_path / "j.journal"
    journal = Journal(path, MIN_BYTES)
    size = 1000
    per_ring = (MIN_BYTES - HEADER) // (4 + len(line(0, size)) + 4)
    written = 0
    while journal.append(line(written, size)):
        written += 1
    assert per_ring - 1 <= written <= per_ring + 1
    assert numbers(path) == list(range(written))
    journal.release(journal.cut())
    # Round and round: every lap's unreleased records are recovered in order.
    half = written // 2
    for lap in range(5):
        start = written
        for _ in range(half + lap):
            assert journal.append(line(written, size))
            written += 1
        assert numbers(path) == list(range(start, written))
        journal.release(journal.cut())
    assert numbers(path) == []
    assert not journal.append(b"x" * MIN_BYTES)  # larger than the ring: never fits
    journal.close()


def test_a_torn_record_ends_the_recovery(tmp_path: Path) -> None:
    """A record whose length was never written (the process died copying it) is not read,
    nor anything after it."""
    path = tmp_path / "j.journal"
    journal = Journal(path, MIN_BYTES)
    journal.append(line(0))
    journal.append(line(1))
    journal.append(line(2))
    journal.close()
    record = 4 + ((len(line(0)) + 3) & ~3)
    with path.open("r+b") as file:
        file.seek(HEADER + record)
        file.write(bytes(4))
    assert numbers(path) == [0]


def test_hostile_journal_files_recover_without_error(tmp_path: Path) -> None:
    """Random bytes, a huge stored tail, lengths past the end, a missing file: recover
    returns what parses (nothing here) and never raises."""
    path = tmp_path / "j.journal"
    assert recover(path) == []
    randomness = random.Random(24)
    for size in (0, 3, HEADER + 3, 4096, MIN_BYTES):
        path.write_bytes(randomness.randbytes(size))
        assert recover(path) == []
    journal = Journal(path, MIN_BYTES)
    journal.append(line(0))
    journal.close()
    with path.open("r+b") as file:
        file.seek(8)
        file.write((1 << 63).to_bytes(8, "little"))
    assert recover(path) == []
    journal = Journal(path, MIN_BYTES)
    journal.append(line(0))
    journal.close()
    with path.open("r+b") as file:
        file.seek(HEADER)
        file.write((MIN_BYTES - 8).to_bytes(4, "little"))
    assert recover(path) == []
    journal = Journal(path, MIN_BYTES)
    journal.append(b"not a record at all")
    journal.append(b"\xff\xfe\x00\t\t")
    journal.append(line(7))
    journal.close()
    assert numbers(path) == [7]


def test_a_truncated_journal_recovers_what_it_holds(tmp_path: Path) -> None:
    """A journal file cut short inside an end mark (a partial copy, a damaged disk), so the
    next record would start past its end: its whole records are recovered, and nothing
    raises (a worker must start whatever its journal holds)."""
    path = tmp_path / "j.journal"
    value = next(line(0, size) for size in range(40, 44) if len(line(0, size)) % 4 == 1)
    journal = Journal(path, MIN_BYTES)
    journal.append(value)
    journal.close()
    os.truncate(path, HEADER + 4 + len(value) + 3 + 2)
    assert numbers(path) == [0]


def test_a_fifo_in_place_of_the_journal_does_not_hold_up_the_start(tmp_path: Path) -> None:
    """A named pipe where the journal should be is no journal: recover returns at once
    (opening it for reading would wait for a writer forever, and the worker with it)."""
    path = tmp_path / "j.journal"
    os.mkfifo(path)
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from shortlink.redirect.journal import recover\n"
        "assert recover(Path(sys.argv[1])) == []\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], check=False, timeout=30)
    assert done.returncode == 0


def test_records_outlive_a_sigkilled_process(tmp_path: Path) -> None:
    """A process that appended records and is killed with SIGKILL (no flush, no close)
    leaves them for the next one."""
    path = tmp_path / "j.journal"
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from shortlink.redirect.journal import Journal\n"
        "from tests.shortlink.redirect.test_journal import line\n"
        "journal = Journal(Path(sys.argv[1]), 1 << 20)\n"
        "for n in range(100):\n"
        "    journal.append(line(n))\n"
        "journal.release(journal.cut())\n"
        "for n in range(100, 250):\n"
        "    journal.append(line(n))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], check=False)
    assert done.returncode == -signal.SIGKILL
    assert numbers(path) == list(range(100, 250))
    assert os.path.getsize(path) == 1 << 20


async def test_every_302_of_a_sigkilled_worker_is_published_after_its_restart(
    redirect_env: dict[str, str],
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """A redirect worker process is SIGKILLed while taps flow: after the next one starts on
    the same spool directory, every tap answered 302 is in the topic, and a click published
    twice carries one event id both times (the forwarder records an event id once)."""
    links = await make_links(db, account_id, 20)
    port = embedded.free_port()
    env = {
        **os.environ,
        **redirect_env,
        # Clicks wait long in the buffer: the kill finds many answered and not yet sent.
        "PUBLISH_LINGER_MS": "400",
        "REDIRECT_METRICS_PORT": "0",
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "shortlink.cli", "redirect", "--workers", "1"]

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([*command, "--port", str(port)], env=env)

    answered: list[str] = []  # the User-Agent of every tap answered 302
    process = start()
    try:
        await wait_until(lambda: embedded.port_is_open("127.0.0.1", port), within=60)

        async def tapper(session: aiohttp.ClientSession, lane: int) -> None:
            for n in itertools.count():
                agent = f"tap-{lane}-{n}"
                url = f"http://127.0.0.1:{port}/{links[n % len(links)].token}"
                try:
                    async with session.get(
                        url, headers={"User-Agent": agent}, allow_redirects=False
                    ) as response:
                        if response.status == 302:
                            answered.append(agent)
                except aiohttp.ClientError:
                    return

        async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as taps:
            for lane in range(4):
                taps.create_task(tapper(session, lane))
            await wait_until(lambda: len(answered) >= 1500, within=60, step=0.01)
            process.send_signal(signal.SIGKILL)
            process.wait()
        before = {
            clickevent.decode(r.value).user_agent
            for r in await consume(kafka_bootstrap, click_topic, 0, within=0, to_end=True)
        }
        assert len(before) < len(answered), "nothing was left unsent at the kill"
        process = start()
        await wait_until(lambda: embedded.port_is_open("127.0.0.1", port), within=60)
        events = [
            clickevent.decode(r.value)
            for r in await consume(kafka_bootstrap, click_topic, len(answered), within=60)
        ]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    ids: dict[str | None, set[str]] = {}
    for event in events:
        ids.setdefault(event.user_agent, set()).add(event.event_id)
    assert set(answered) <= set(ids)
    assert all(len(event_ids) == 1 for event_ids in ids.values())


async def test_a_full_journal_spools_clicks_and_loses_none(
    redirect_env: dict[str, str],
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """Clicks that do not fit in the journal (a send is slow) go to the spool at once,
    still answered 302, and every click is published once."""
    [link] = await make_links(db, account_id, 1)
    config = RedirectConfig.from_env(
        {**redirect_env, "PUBLISH_JOURNAL_BYTES": str(MIN_BYTES), "PUBLISH_LINGER_MS": "1500"}
    )
    async with running(create_app(config), make_handler) as server:
        publisher = server.app[PUBLISHER]
        agent = "x" * 1000  # ~1.3 kB a record: the 64 KiB journal holds about fifty
        async with aiohttp.ClientSession() as session:
            for _ in range(150):
                async with session.get(
                    f"{server.url}/{link.token}",
                    headers={"User-Agent": agent},
                    allow_redirects=False,
                ) as response:
                    assert response.status == 302
        assert publisher.journal_full > 0
        await wait_until(lambda: publisher.published == 150, within=30)
    events = await consume(kafka_bootstrap, click_topic, 150, to_end=True)
    assert len({clickevent.decode(r.value).event_id for r in events}) == len(events) == 150


async def test_a_journal_left_by_a_worker_of_another_deployment_is_published(
    redirect_env: dict[str, str],
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
    tmp_path: Path,
) -> None:
    """A journal beside a spool no running worker owns (a deployment with more workers
    before) is moved to that spool and replayed, with its events' ids."""
    values = clicks(await make_links(db, account_id, 30))
    spool_dir = Path(redirect_env["SPOOL_DIR"])
    Spool(spool_dir, "redirect-7", 1 << 20).close()
    journal = Journal(spool_dir / "redirect-7.journal", MIN_BYTES)
    for _, value in values:
        assert journal.append(value)
    journal.close()
    config = RedirectConfig.from_env(redirect_env)
    async with running(create_app(config), make_handler) as server:
        assert server.app[PUBLISHER].recovered == 30
        events = await consume(kafka_bootstrap, click_topic, 30, to_end=True)
    assert sorted(r.value for r in events) == sorted(value for _, value in values)
    assert not (spool_dir / "redirect-7.journal").exists()


async def test_a_journal_that_cannot_be_made_is_said_and_redirects_go_on(
    redirect_env: dict[str, str],
    db: asyncpg.Connection,
    account_id: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the journal file cannot be made (here a folder is in its place) the worker
    says so and serves and publishes without it."""
    [link] = await make_links(db, account_id, 1)
    (Path(redirect_env["SPOOL_DIR"]) / "redirect-0.journal").mkdir(parents=True)
    config = RedirectConfig.from_env(redirect_env)
    async with running(create_app(config), make_handler) as server:
        publisher = server.app[PUBLISHER]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/{link.token}", allow_redirects=False) as r:
                assert r.status == 302
        await wait_until(lambda: publisher.published == 1)
    assert "cannot create the click journal" in caplog.text


def _publisher(spool_dir: Path, spool_max_bytes: int = 1 << 20) -> ClickPublisher:
    """A publisher on `spool_dir` (not started: recovery is done when it is made)."""
    return ClickPublisher(
        bootstrap_servers="127.0.0.1:1",
        topic="clicks",
        buffer_limit=1000,
        linger=0.0,
        request_timeout=1.0,
        spool_dir=spool_dir,
        spool_name="redirect-0",
        spool_max_bytes=spool_max_bytes,
        supervisor=Supervisor("test"),
        journal_bytes=MIN_BYTES,
    )


def test_journaled_clicks_the_spool_cannot_take_stay_in_the_journal(tmp_path: Path) -> None:
    """A killed worker's journal holding more than its full spool can take is kept, not
    emptied (the worker runs without a journal meanwhile), so the clicks the spool refused
    are moved by a later start, once the spool has room."""
    spool_dir = tmp_path / "spool"
    Spool(spool_dir, "redirect-0", 1 << 20).close()
    journal = Journal(spool_dir / "redirect-0.journal", MIN_BYTES)
    for n in range(20):
        assert journal.append(line(n, 1000))
    journal.close()
    publisher = _publisher(spool_dir, spool_max_bytes=5_000)  # room for four of them
    assert publisher.recovered == 20
    assert numbers(spool_dir / "redirect-0.journal") == list(range(20))
    assert publisher._journal is None
    spool = publisher._spool
    spool.commit(spool.size)  # the four it took were replayed
    spool.close()
    publisher = _publisher(spool_dir)
    assert publisher.recovered == 20
    assert publisher._journal is not None  # a new, empty one
    assert numbers(spool_dir / "redirect-0.journal") == []
    records, _ = publisher._spool.read(100)
    assert [int(key[3:]) for key, _, _ in records] == list(range(20))
    publisher._spool.close()


def test_recovered_clicks_are_on_disk_before_the_journal_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool holding a journal's clicks is fsynced before the journal is removed (the
    journal's pages may be on disk already; a machine crash then must not lose both)."""
    spool_dir = tmp_path / "spool"
    Spool(spool_dir, "redirect-0", 1 << 20).close()
    path = spool_dir / "redirect-0.journal"
    journal = Journal(path, MIN_BYTES)
    for n in range(5):
        assert journal.append(line(n))
    journal.close()
    journal_there_at_fsync: list[bool] = []
    fsync = os.fsync

    def watched(fd: int) -> None:
        journal_there_at_fsync.append(path.exists())
        fsync(fd)

    monkeypatch.setattr(os, "fsync", watched)
    publisher = _publisher(spool_dir)
    assert publisher.recovered == 5
    assert journal_there_at_fsync[:1] == [True]
    publisher._spool.close()


async def test_an_adopted_journal_the_spool_cannot_take_is_published_by_a_later_start(
    redirect_env: dict[str, str],
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """An adopted spool whose journal held more than the spool could take is replayed but
    kept with its journal; the next start with room publishes every click of it, each
    with its one event id."""
    values = clicks(await make_links(db, account_id, 30))
    spool_dir = Path(redirect_env["SPOOL_DIR"])
    Spool(spool_dir, "redirect-7", 1 << 20).close()
    journal = Journal(spool_dir / "redirect-7.journal", MIN_BYTES)
    for _, value in values:
        assert journal.append(value)
    journal.close()
    small = RedirectConfig.from_env({**redirect_env, "SPOOL_MAX_BYTES": str(4 << 10)})
    async with running(create_app(small), make_handler) as server:
        publisher = server.app[PUBLISHER]
        assert publisher.recovered == 30
        await wait_until(lambda: publisher.replayed > 0 and not publisher._adopted)
    assert (spool_dir / "redirect-7.spool").exists()
    assert len(recover(spool_dir / "redirect-7.journal")) == 30
    async with running(create_app(RedirectConfig.from_env(redirect_env)), make_handler) as server:
        assert server.app[PUBLISHER].recovered == 30
        events = await consume(kafka_bootstrap, click_topic, 30 + publisher.replayed, to_end=True)
    assert {r.value for r in events} == {value for _, value in values}
    assert not (spool_dir / "redirect-7.journal").exists()
    assert not (spool_dir / "redirect-7.spool").exists()
