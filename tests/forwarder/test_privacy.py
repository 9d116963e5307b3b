"""IP storage modes: the address cut or dropped before anything is written or delivered."""

from __future__ import annotations

import random
from pathlib import Path

import asyncpg
import orjson
import pytest

from forwarder.privacy import IpModes, applied, truncated
from forwarder.recorder import record
from shortlink import accounts
from shortlink.clickevent import ClickEvent
from shortlink.geoip import Locator
from tests.clicks import IPHONE, clicks, events, make_links, publish
from tests.forwarder.endpoint import Sink, set_endpoint
from tests.infra import RunningServer, wait_until


@pytest.mark.parametrize(
    ("address", "kept"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("145.97.39.155", "145.97.39.0"),
        ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::"),
        ("::ffff:203.0.113.77", "::"),
        ("not an address", None),
        ("999.1.1.1", None),
        ("", None),
        (None, None),
    ],
)
def test_truncated_keeps_the_network_only(address: str | None, kept: str | None) -> None:
    """IPv4 keeps its /24, IPv6 its /48; what is not an address keeps nothing."""
    assert truncated(address) == kept


def test_random_text_never_breaks_truncation() -> None:
    """Any text (random bytes decoded) gives an address or None, never an exception."""
    chaos = random.Random(23)
    for _ in range(2000):
        text = bytes(chaos.randrange(256) for _ in range(chaos.randrange(60))).decode(
            "utf-8", "replace"
        )
        result = truncated(text)
        assert result is None or isinstance(result, str)


async def test_modes_are_read_again_only_when_stale(
    db: asyncpg.Connection, account_id: int
) -> None:
    """IpModes reads the accounts' modes once per refresh period: a change shows after it."""
    now = [0.0]
    modes = IpModes(refresh=5.0, clock=lambda: now[0])
    assert account_id not in await modes.fresh(db)
    await accounts.update_settings(db, account_id, ip_storage="none")
    now[0] = 4.9
    assert account_id not in await modes.fresh(db)  # not stale yet
    now[0] = 5.0
    assert (await modes.fresh(db))[account_id] == "none"


async def test_recorded_and_queued_clicks_keep_what_the_mode_says(
    db: asyncpg.Connection, account_id: int, city_database: Path
) -> None:
    """truncated stores and queues the /24, none no address; both are placed from the full one."""
    await set_endpoint(db, account_id, "http://127.0.0.1:9/hook")
    [link] = await make_links(db, account_id, 1)
    locator = Locator(city_database)
    for mode, stored in (("truncated", "145.97.39.0"), ("none", None), ("full", "145.97.39.155")):
        [event] = events(clicks([link], ip="145.97.39.155"))
        await record(db, [event], batch_size=100, locator=locator, ip_modes={account_id: mode})
        row = await db.fetchrow(
            "SELECT host(client_ip) AS ip, country, region FROM clicks WHERE event_id = $1",
            event.event_id,
        )
        assert tuple(row.values()) == (stored, "NL", "North Holland"), mode
        detail = await db.fetchval("SELECT detail FROM outbox WHERE event_id = $1", event.event_id)
        assert orjson.loads(detail)["Referrer"] == stored, mode


def test_accounts_without_a_mode_keep_their_events_as_they_are() -> None:
    """An account absent from the modes keeps the full address; no modes copy nothing."""
    event = ClickEvent(
        "e",
        "AAAAAAA",
        1,
        7,
        "https://e.x/",
        "44",
        None,
        None,
        0,
        0,
        IPHONE,
        "10.1.2.3",
        None,
        "GET",
        False,
    )
    assert applied([event], {}) == [event]
    assert applied([event], {8: "none"}) == [event]
    assert applied([event], {7: "none"})[0].client_ip is None


async def test_the_running_forwarder_applies_a_changed_mode(
    forwarder: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
    sink: Sink,
) -> None:
    """After PATCHing ip_storage to truncated, the forwarder records and delivers the /24."""
    await set_endpoint(db, account_id, sink.url)
    await accounts.update_settings(db, account_id, ip_storage="truncated")
    [link] = await make_links(db, account_id, 1)

    # The forwarder reads modes at most every 5 s: keep tapping until a tap is cut.
    async def cut() -> bool:
        await publish(kafka_bootstrap, click_topic, clicks([link], ip="203.0.113.77"))
        ips = await db.fetch("SELECT host(client_ip) AS ip FROM clicks WHERE link_id = $1", link.id)
        return any(row["ip"] == "203.0.113.0" for row in ips)

    await wait_until(cut, within=20, step=0.5, what="a tap recorded with its /24")

    async def delivered() -> bool:
        return any(b'"Referrer":"203.0.113.0"' in item.body for item in sink.received)

    await wait_until(delivered, within=20, what="a delivery with the /24")
