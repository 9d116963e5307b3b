"""Recording a batch of click events: once, with first clicks, counters and deliveries."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from pathlib import Path

import asyncpg
import orjson

from forwarder.recorder import Outcome, record
from shortlink.campaigns.counters import OTHER, VALUES_KEPT, bucket_seconds, first_click_bucket
from shortlink.geoip import Locator
from shortlink.links import LinkEntry
from tests.clicks import clicks, events, make_links
from tests.forwarder.endpoint import set_endpoint


async def stats(db: asyncpg.Connection, account_id: int) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT * FROM campaign_stats WHERE account_id = $1 AND campaign = 'spring-sale'",
        account_id,
    )
    assert row is not None
    return row


async def test_clicks_are_recorded_with_what_enrichment_found(
    db: asyncpg.Connection, account_id: int
) -> None:
    """A recorded click keeps the event's fields and the parsed user agent."""
    [link] = await make_links(db, account_id, 1)
    [event] = events(clicks([link]))
    outcome = await record(db, [event], batch_size=100)
    assert (outcome.recorded, outcome.duplicates, outcome.first_clicks) == (1, 0, 1)
    row = await db.fetchrow("SELECT * FROM clicks WHERE event_id = $1", event.event_id)
    assert row["link_id"] == link.id
    assert row["browser"] == "Mobile Safari"
    assert row["os"] == "iOS"
    assert row["device_type"] == "mobile"
    assert row["device_name"] == "iPhone"
    assert row["is_bot"] is False
    assert str(row["client_ip"]) == "203.0.113.7"
    assert row["phone_number"] == link.phone_number


async def test_replayed_events_change_nothing(db: asyncpg.Connection, account_id: int) -> None:
    """Recording the same events again (a Kafka replay) adds no click and no count."""
    links = await make_links(db, account_id, 5)
    batch = events(clicks(links))
    await record(db, batch, batch_size=100)
    before = await stats(db, account_id)
    again = await record(db, batch + batch[:2], batch_size=100)
    assert (again.recorded, again.duplicates, again.unknown_links) == (0, 7, 0)
    after = await stats(db, account_id)
    assert dict(after) == dict(before)
    assert (
        await db.fetchval(
            "SELECT count(*) FROM clicks WHERE link_id = ANY($1::bigint[])", [lk.id for lk in links]
        )
        == 5
    )


async def test_first_click_is_set_once_and_counted_once(
    db: asyncpg.Connection, account_id: int
) -> None:
    """Twenty clicks on a link record the earliest as its first click and count one unique click."""
    [link] = await make_links(db, account_id, 1)
    batch = [event for i in range(20) for event in events(clicks([link], at=1_750_000_000 + i))]
    outcome = await record(db, list(reversed(batch)), batch_size=100)
    assert outcome.first_clicks == 1
    first = await db.fetchval("SELECT clicked_at FROM first_clicks WHERE link_id = $1", link.id)
    assert first.timestamp() == 1_750_000_000
    row = await stats(db, account_id)
    assert (row["total_clicks"], row["unique_clicks"], row["bot_clicks"]) == (20, 1, 0)


async def test_concurrent_forwarders_agree_on_one_first_click(
    database_url: str, db: asyncpg.Connection, account_id: int
) -> None:
    """Two transactions recording different clicks on one link at once: exactly one wins."""
    [link] = await make_links(db, account_id, 1)
    conns = [await asyncpg.connect(database_url) for _ in range(2)]
    try:
        outcomes = await asyncio.gather(
            *(record(conn, events(clicks([link])), batch_size=100) for conn in conns)
        )
    finally:
        for conn in conns:
            await conn.close()
    assert sorted(o.first_clicks for o in outcomes) == [0, 1]
    assert (await stats(db, account_id))["unique_clicks"] == 1


async def test_a_first_click_committed_meanwhile_leaves_the_other_batch_recorded(
    database_url: str, db: asyncpg.Connection, account_id: int
) -> None:
    """A batch whose first click loses to one committed while it waits is recorded in full."""
    [link, other] = await make_links(db, account_id, 2)
    holder, waiter = [await asyncpg.connect(database_url) for _ in range(2)]
    try:
        held = holder.transaction()
        await held.start()
        first = await record(holder, events(clicks([link])), batch_size=100)
        waiting_pid = await waiter.fetchval("SELECT pg_backend_pid()")
        late = asyncio.create_task(
            record(waiter, events(clicks([link, other], at=1_750_000_001)), batch_size=100)
        )
        try:
            for _ in range(200):  # until the waiter waits for the holder's first click
                if await db.fetchval(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                    waiting_pid,
                ):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the second batch never waited for the first")
            await held.commit()
        finally:
            second = await late
    finally:
        for conn in (holder, waiter):
            await conn.close()
    assert (first.recorded, first.first_clicks) == (1, 1)
    assert (second.recorded, second.duplicates, second.first_clicks) == (2, 0, 1)
    assert (
        await db.fetchval(
            "SELECT count(*) FROM clicks WHERE link_id = ANY($1::bigint[])", [link.id, other.id]
        )
        == 3
    )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM conversions WHERE link_id = ANY($1::bigint[])",
            [link.id, other.id],
        )
        == 2
    )
    assert (await stats(db, account_id))["unique_clicks"] == 2


async def test_a_batch_with_some_replayed_events_records_the_new_ones(
    db: asyncpg.Connection, account_id: int
) -> None:
    """New events beside replayed ones are recorded once, the replayed counted duplicates."""
    links = await make_links(db, account_id, 4)
    old = events(clicks(links[:2]))
    await record(db, old, batch_size=100)
    new = events(clicks(links[2:]))
    outcome = await record(db, [*old, *new], batch_size=100)
    assert (outcome.recorded, outcome.duplicates, outcome.first_clicks) == (2, 2, 2)
    assert sorted(outcome.first_click_events) == sorted(e.event_id for e in new)
    row = await stats(db, account_id)
    assert (row["total_clicks"], row["unique_clicks"]) == (4, 4)


async def test_bots_are_recorded_apart(db: asyncpg.Connection, account_id: int) -> None:
    """Preview fetches are recorded and flagged, but are no first click and no unique click."""
    [link] = await make_links(db, account_id, 1)
    batch = events(clicks([link], user_agent="WhatsApp/2.23.20.0 A"))
    batch += events(clicks([link], method="HEAD"))
    outcome = await record(db, batch, batch_size=100)
    assert (outcome.recorded, outcome.bots, outcome.first_clicks) == (2, 2, 0)
    assert (
        await db.fetchval("SELECT clicked_at FROM first_clicks WHERE link_id = $1", link.id) is None
    )
    row = await stats(db, account_id)
    assert (row["total_clicks"], row["unique_clicks"], row["bot_clicks"]) == (0, 0, 2)


async def test_breakdowns_and_time_to_first_click(db: asyncpg.Connection, account_id: int) -> None:
    """Browser, OS and device counts and the first-click histogram are kept per campaign."""
    links = await make_links(db, account_id, 3)
    created = links[0].created_at_ms / 1000
    batch = events(clicks(links[:2], at=created + 60))
    batch += events(
        clicks(
            links[2:],
            at=created + 3600,
            user_agent="Mozilla/5.0 (Windows NT 10.0; Win64; x64)"
            " AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        )
    )
    await record(db, batch, batch_size=100)
    rows = await db.fetch(
        "SELECT dimension, value, clicks FROM campaign_breakdown WHERE account_id = $1",
        account_id,
    )
    counts = {(r["dimension"], r["value"]): r["clicks"] for r in rows}
    assert counts[("device_type", "mobile")] == 2
    assert counts[("device_type", "desktop")] == 1
    assert counts[("os", "iOS")] == 2
    assert counts[("browser", "Chrome")] == 1
    buckets = await db.fetch(
        "SELECT bucket, links FROM campaign_first_click WHERE account_id = $1", account_id
    )
    times = sorted(bucket_seconds(r["bucket"]) for r in buckets for _ in range(r["links"]))
    assert 55 < times[0] < 65
    assert 3400 < times[-1] < 3800
    assert first_click_bucket(0, 0) == 0


def made_up_browser(n: int) -> str:
    """A user agent whose browser, for ua-parser, is "Brand" and three letters made of n."""
    letters = "".join(chr(ord("a") + n // 26**k % 26) for k in range(3))
    return f"Brand{letters}/1.0 CFNetwork/1240.0.4 Darwin/20.6.0"


async def test_the_values_a_campaign_counts_per_dimension_are_capped(
    db: asyncpg.Connection, account_id: int
) -> None:
    """Taps with more distinct browsers than VALUES_KEPT leave at most that many rows; the
    newest count as Other, and values counted before the cap go on counting apart."""
    links = await make_links(db, account_id, 30)
    safari = events(clicks(links[:3]))
    await record(db, safari, batch_size=100)
    made_up = [
        event
        for n in range(VALUES_KEPT + 40)
        for event in events(clicks([links[n % len(links)]], user_agent=made_up_browser(n)))
    ]
    for start in range(0, len(made_up), 70):  # batches, as the consumer hands them over
        await record(db, made_up[start : start + 70], batch_size=100)
    await record(db, events(clicks(links[3:5])), batch_size=100)  # Safari again, after the cap
    rows = await db.fetch(
        """
        SELECT value, clicks FROM campaign_breakdown
        WHERE account_id = $1 AND campaign = 'spring-sale' AND dimension = 'browser'
        """,
        account_id,
    )
    counts = {row["value"]: row["clicks"] for row in rows}
    assert len(counts) == VALUES_KEPT
    assert counts["Mobile Safari"] == 5
    assert counts[OTHER] == 42  # one row is kept for Other: Safari and 198 made-up ones apart
    assert sum(counts.values()) == VALUES_KEPT + 40 + 5
    assert sum(1 for value in counts if value.startswith("Brand")) == VALUES_KEPT - 2


async def test_events_for_unknown_links_are_skipped(
    db: asyncpg.Connection, account_id: int
) -> None:
    """An event naming a link that does not exist (or another account's) is not recorded."""
    [link] = await make_links(db, account_id, 1)
    forged = link.__class__(
        10**12, link.token, account_id, link.target_url, None, None, None, 0, 0.0, False, False
    )
    foreign = link.__class__(
        link.id,
        link.token,
        account_id + 10**9,
        link.target_url,
        None,
        None,
        None,
        0,
        0.0,
        False,
        False,
    )
    outcome = await record(db, events(clicks([forged, foreign, link])), batch_size=100)
    assert (outcome.recorded, outcome.unknown_links) == (1, 2)


async def _sizes_and_waiting(db: asyncpg.Connection, account_id: int) -> tuple[list[int], int]:
    """The clicks of each delivery of the account, and how many of its clicks wait."""
    sizes = await db.fetch(
        "SELECT d.clicks FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id "
        "WHERE e.account_id = $1 ORDER BY d.created_at, d.clicks",
        account_id,
    )
    waiting = await db.fetchval(
        "SELECT count(*) FROM outbox o JOIN endpoints e ON e.id = o.endpoint_id "
        "WHERE e.account_id = $1",
        account_id,
    )
    return [r["clicks"] for r in sizes], waiting


async def test_clicks_that_fill_a_batch_all_go_in_batches_of_near_equal_size(
    db: asyncpg.Connection, account_id: int
) -> None:
    """250 human clicks for a json endpoint: three deliveries of 83 or 84 now, none wait."""
    await set_endpoint(db, account_id, "http://127.0.0.1:9/hook")
    links = await make_links(db, account_id, 250)
    outcome = await record(db, events(clicks(links)), batch_size=100)
    assert outcome.deliveries == 3
    sizes, waiting = await _sizes_and_waiting(db, account_id)
    assert sorted(sizes) == [83, 83, 84]
    assert waiting == 0


async def test_clicks_that_fill_no_batch_wait_and_go_with_the_next(
    db: asyncpg.Connection, account_id: int
) -> None:
    """60 clicks wait in the outbox; 60 more make 120 that go as two batches of 60."""
    await set_endpoint(db, account_id, "http://127.0.0.1:9/hook")
    links = await make_links(db, account_id, 120)
    first = await record(db, events(clicks(links[:60])), batch_size=100)
    assert first.deliveries == 0
    assert await _sizes_and_waiting(db, account_id) == ([], 60)
    second = await record(db, events(clicks(links[60:])), batch_size=100)
    assert second.deliveries == 2
    assert await _sizes_and_waiting(db, account_id) == ([60, 60], 0)
    bodies = await db.fetch(
        "SELECT d.body FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id "
        "WHERE e.account_id = $1",
        account_id,
    )
    delivered = sorted(
        detail["TrackingUrlId"]
        for row in bodies
        for detail in orjson.loads(row["body"])["ClickDetails"]
    )
    assert delivered == sorted(link.id for link in links)


async def test_first_mode_and_clickthru_deliver_first_clicks_only(
    db: asyncpg.Connection, account_id: int
) -> None:
    """A clickthru endpoint gets one delivery per link's first human click, nothing else."""
    await set_endpoint(db, account_id, "http://127.0.0.1:9/hook", format="clickthru")
    links = await make_links(db, account_id, 3)
    batch = events(clicks(links)) + events(clicks(links)) + events(clicks(links, method="HEAD"))
    outcome = await record(db, batch, batch_size=100)
    assert outcome.deliveries == 3
    assert (
        await db.fetchval(
            "SELECT count(*) FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id "
            "WHERE e.account_id = $1 AND d.format = 'clickthru' AND d.clicks = 1",
            account_id,
        )
        == 3
    )


async def test_a_first_click_marked_by_an_earlier_release_is_not_made_again(
    db: asyncpg.Connection, account_id: int
) -> None:
    """A link made before partitioning whose first click a forwarder of an earlier release
    set in links.first_clicked_at gets no second first click (and no second notification)."""
    [made] = await make_links(db, account_id, 1)
    # Moved into the partition of period 0 (an id without a period), as 0012 left such
    # links in links_legacy; the purge drops that partition once its links have expired.
    made_legacy = not await db.fetchval("SELECT to_regclass('links_legacy') IS NOT NULL")
    if made_legacy:
        await db.execute("CREATE TABLE links_legacy PARTITION OF links FOR VALUES FROM (0) TO (1)")
    try:
        legacy = dataclasses.replace(made, id=made.id & ((1 << 40) - 1))
        await db.execute(
            "UPDATE links SET id = $2, period = 0, first_clicked_at = now() WHERE id = $1",
            made.id,
            legacy.id,
        )
        outcome = await record(db, events(clicks([legacy])), batch_size=100)
        assert (outcome.recorded, outcome.first_clicks) == (1, 0)
        marked = "SELECT count(*) FROM first_clicks WHERE link_id = $1"
        assert await db.fetchval(marked, legacy.id) == 0
    finally:
        await db.execute(
            "DELETE FROM links WHERE id = $1 AND period = 0", made.id & ((1 << 40) - 1)
        )
        if made_legacy:
            await db.execute("DROP TABLE links_legacy")
    [fresh] = await make_links(db, account_id, 1)
    outcome = await record(db, events(clicks([fresh])), batch_size=100)
    assert (outcome.recorded, outcome.first_clicks) == (1, 1)


async def test_clicks_of_one_moment_make_the_smaller_event_id_the_first(
    db: asyncpg.Connection, account_id: int
) -> None:
    """Two taps of a link in the same millisecond: the first click is the one PostgreSQL
    orders first (smaller event id), whatever the order of the batch."""
    [link] = await make_links(db, account_id, 1)
    both = events(clicks([link, link], at=time.time()))
    assert both[0].clicked_at_ms == both[1].clicked_at_ms
    smaller = min(both, key=lambda e: uuid.UUID(e.event_id).bytes)
    outcome = await record(db, sorted(both, key=lambda e: e is smaller), batch_size=100)
    assert (outcome.recorded, outcome.first_click_events) == (2, [smaller.event_id])


async def test_an_event_id_in_capitals_is_recorded_as_any_other(
    db: asyncpg.Connection, account_id: int
) -> None:
    """An event whose id is written in capital hex digits is recorded once, with its first
    click (the recorder matched PostgreSQL's lower-case ids to the events: it was counted a
    duplicate and its first click made no notification)."""
    [link] = await make_links(db, account_id, 1)
    [(token, value)] = clicks([link])
    message = orjson.loads(value)
    message[1] = message[1].upper()
    outcome = await record(db, events([(token, orjson.dumps(message))]), batch_size=100)
    assert (outcome.recorded, outcome.duplicates, outcome.first_clicks) == (1, 0, 1)
    assert outcome.first_click_events == [message[1].lower()]


async def test_events_given_with_capital_ids_match_what_postgresql_answers(
    db: asyncpg.Connection, account_id: int
) -> None:
    """record() itself reads capital ids as lower case: beside a replayed event (so the
    answer names the inserted ones), a new event is counted, and its erased number goes
    nowhere."""
    await set_endpoint(db, account_id, "http://127.0.0.1:9/hook")
    links = await make_links(db, account_id, 2)
    [old, new] = events(clicks(links))
    await record(db, [old], batch_size=1)
    await db.execute("UPDATE links SET phone_number = NULL WHERE id = $1", links[1].id)
    shouted = new._replace(event_id=new.event_id.upper())
    outcome = await record(db, [old, shouted], batch_size=1)
    assert (outcome.recorded, outcome.duplicates, outcome.first_clicks) == (1, 1, 1)
    assert outcome.first_click_events == [new.event_id]
    bodies = await db.fetch(
        "SELECT d.body FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id "
        "WHERE e.account_id = $1",
        account_id,
    )
    details = [orjson.loads(row["body"])["ClickDetails"][0] for row in bodies]
    assert [d["PhoneNumber"] for d in details if d["TrackingUrlId"] == links[1].id] == [None]


async def test_an_empty_batch_records_nothing(db: asyncpg.Connection) -> None:
    """No events: nothing to do, and no statement with an empty list of partitions."""
    assert await record(db, [], batch_size=100) == Outcome()


async def link_clicks(db: asyncpg.Connection, link_id: int) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT event, disposition, occurred_at FROM conversions WHERE link_id = $1", link_id
    )


async def test_the_first_human_tap_records_one_link_click_conversion(
    database_url: str, db: asyncpg.Connection, account_id: int
) -> None:
    """The first tap's transaction records link_click (positive, at the tap); replays, later
    taps, bots and a concurrent forwarder add none."""
    [link, other] = await make_links(db, account_id, 2)
    await record(db, events(clicks([link], user_agent="WhatsApp/2.23.20.0 A")), batch_size=100)
    assert await link_clicks(db, link.id) == []
    batch = events(clicks([link], at=1_750_000_000)) + events(clicks([link], at=1_750_000_100))
    await record(db, batch, batch_size=100)
    await record(db, batch, batch_size=100)  # a Kafka replay
    await record(db, events(clicks([link])), batch_size=100)
    [row] = await link_clicks(db, link.id)
    assert (row["event"], row["disposition"]) == ("link_click", "positive")
    assert row["occurred_at"].timestamp() == 1_750_000_000
    conns = [await asyncpg.connect(database_url) for _ in range(2)]
    try:
        await asyncio.gather(
            *(record(conn, events(clicks([other])), batch_size=100) for conn in conns)
        )
    finally:
        for conn in conns:
            await conn.close()
    assert len(await link_clicks(db, other.id)) == 1


async def test_a_link_with_a_callback_gets_one_clickthru_event_for_it(
    db: asyncpg.Connection, account_id: int
) -> None:
    """A first tap on a link made with a callback URL is a CLICKTHRU delivery to that
    callback (apart from the account's endpoint); later taps and other links make none."""
    from shortlink.endpoints import callback_endpoint
    from shortlink.links import NewLink, create_links

    await set_endpoint(db, account_id, "http://127.0.0.1:9/hook", format="json")
    callback = await callback_endpoint(
        db, account_id, "http://127.0.0.1:9/callback", allow_private=True
    )
    assert (
        await callback_endpoint(db, account_id, "http://127.0.0.1:9/callback", allow_private=True)
        == callback
    )
    [made] = await create_links(
        db, account_id, [NewLink("https://shop.example.com/c")], callback_id=callback
    )
    [plain] = await make_links(db, account_id, 1)
    entry = LinkEntry(
        made.id,
        made.token,
        account_id,
        "https://shop.example.com/c",
        None,
        None,
        None,
        0,
        0.0,
        False,
        False,
    )
    await record(db, events(clicks([entry, plain])) + events(clicks([entry])), batch_size=100)
    await record(db, events(clicks([entry])), batch_size=100)
    rows = await db.fetch(
        "SELECT format, clicks, body FROM deliveries WHERE endpoint_id = $1", callback
    )
    assert [(r["format"], r["clicks"]) for r in rows] == [("clickthru", 1)]
    assert b'"tracking_url_id":%d' % made.id in rows[0]["body"]
    waiting = await db.fetchval(
        "SELECT count(*) FROM outbox o JOIN endpoints e ON e.id = o.endpoint_id "
        "WHERE e.account_id = $1",
        account_id,
    )
    assert waiting == 4  # the account's json endpoint still gets every human click


async def test_a_disabled_callback_gets_nothing(db: asyncpg.Connection, account_id: int) -> None:
    """A callback disabled (by a 410 Gone) is not given first taps; naming it again in a
    request enables it."""
    from shortlink.endpoints import callback_endpoint
    from shortlink.links import NewLink, create_links

    url = "http://127.0.0.1:9/gone"
    callback = await callback_endpoint(db, account_id, url, allow_private=True)
    await db.execute("UPDATE endpoints SET enabled = false WHERE id = $1", callback)
    [made] = await create_links(
        db, account_id, [NewLink("https://e.example/")], callback_id=callback
    )
    entry = LinkEntry(
        made.id,
        made.token,
        account_id,
        "https://e.example/",
        None,
        None,
        None,
        0,
        0.0,
        False,
        False,
    )
    await record(db, events(clicks([entry])), batch_size=100)
    assert (
        await db.fetchval("SELECT count(*) FROM deliveries WHERE endpoint_id = $1", callback) == 0
    )
    assert await callback_endpoint(db, account_id, url, allow_private=True) == callback
    assert await db.fetchval("SELECT enabled FROM endpoints WHERE id = $1", callback) is True


async def breakdown(db: asyncpg.Connection, account_id: int, dimension: str) -> dict[str, int]:
    rows = await db.fetch(
        """
        SELECT value, clicks FROM campaign_breakdown
        WHERE account_id = $1 AND campaign = 'spring-sale' AND dimension = $2
        """,
        account_id,
        dimension,
    )
    return {row["value"]: row["clicks"] for row in rows}


async def test_clicks_get_country_from_the_packaged_data(
    db: asyncpg.Connection, account_id: int
) -> None:
    """Each click gets the country of its IP (RIR data) and no region; private ones get null;
    people are counted per country, bots apart, replays not at all."""
    links = await make_links(db, account_id, 4)
    batch = events(clicks(links[:2], ip="145.97.39.155"))  # NL
    batch += events(clicks(links[2:3], ip="8.8.8.8"))  # US
    batch += events(clicks(links[3:4], ip="10.0.0.7"))  # private
    batch += events(clicks(links[:1], ip="145.97.39.155", user_agent="WhatsApp/2.23.20.0 A"))
    await record(db, batch, batch_size=100)
    await record(db, batch, batch_size=100)  # a replay counts nothing
    rows = await db.fetch(
        "SELECT event_id, country, region FROM clicks WHERE link_id = ANY($1::bigint[])",
        [lk.id for lk in links],
    )
    places = {str(r["event_id"]): (r["country"], r["region"]) for r in rows}
    assert [places[e.event_id] for e in batch] == [
        ("NL", None),
        ("NL", None),
        ("US", None),
        (None, None),
        ("NL", None),
    ]
    assert await breakdown(db, account_id, "country") == {"NL": 2, "US": 1, "unknown": 1}


async def test_the_operators_database_gives_regions(
    db: asyncpg.Connection, account_id: int, city_database: Path
) -> None:
    """With GEOIP_DATABASE the click gets the file's country and region."""
    links = await make_links(db, account_id, 2)
    batch = events(clicks(links[:1], ip="145.97.39.155")) + events(
        clicks(links[1:], ip="2a02:a440::9")
    )
    locator = Locator(city_database)
    try:
        await record(db, batch, batch_size=100, locator=locator)
    finally:
        locator.close()
    rows = await db.fetch(
        "SELECT country, region FROM clicks WHERE link_id = ANY($1::bigint[]) ORDER BY link_id",
        [lk.id for lk in links],
    )
    assert [(r["country"], r["region"]) for r in rows] == [
        ("NL", "North Holland"),
        ("NL", "Utrecht"),
    ]
    assert await breakdown(db, account_id, "country") == {"NL": 2}


async def test_a_file_code_that_is_no_country_does_not_refuse_the_click(
    db: asyncpg.Connection, account_id: int, tmp_path: Path
) -> None:
    """A GEOIP_DATABASE marking an address "A1" (MaxMind's legacy anonymous proxy) does not
    make PostgreSQL refuse the click (clicks.country's CHECK): it gets the packaged country."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
    writer.insert_network(IPSet(["145.97.0.0/16"]), {"country": {"iso_code": "A1"}})
    writer.to_db_file(str(tmp_path / "legacy.mmdb"))
    links = await make_links(db, account_id, 1)
    locator = Locator(tmp_path / "legacy.mmdb")
    try:
        outcome = await record(
            db, events(clicks(links, ip="145.97.39.155")), batch_size=100, locator=locator
        )
    finally:
        locator.close()
    assert outcome.recorded == 1
    assert await db.fetchval("SELECT country FROM clicks WHERE link_id = $1", links[0].id) == "NL"
