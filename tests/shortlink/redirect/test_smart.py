"""Smart destinations in the redirect server: rules chosen per tap, variants kept per link,
the click event's destination fields, and a campaign retargeted on every worker at once."""

from __future__ import annotations

import time

import aiohttp
import asyncpg
import orjson

from shortlink import clickevent, links, rules
from shortlink.links import NewLink, create_links
from shortlink.redirect.app import create_app, make_handler
from shortlink.redirect.cache import CACHE
from shortlink.redirect.config import RedirectConfig
from shortlink.redirect.listener import LISTENER
from tests.clicks import IPHONE
from tests.infra import RunningServer, all_published, consume, exchange, running, wait_until

ANDROID = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/120.0 Mobile Safari"
WHATSAPP = "WhatsApp/2.23.20.0 A"
URL = "https://example.com/landing"
APP_STORES = rules.canonical(
    [
        {"when": {"os": ["iOS"]}, "url": "https://apps.apple.com/app/id1"},
        {"when": {"os": ["Android"]}, "url": "https://play.google.com/store/apps/details?id=x"},
    ]
)


async def location(server: RunningServer, token: str, **headers: str) -> str | None:
    """Tap once (redirect not followed); the Location answered."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.url}/{token}", headers=headers, allow_redirects=False) as response,
    ):
        assert response.status == 302
        return response.headers.get("Location")


async def test_rules_send_each_phone_to_its_store_and_bots_to_the_url(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """iPhone to the App Store, Android to Google Play, a preview and a desktop to `url`."""
    [link] = await create_links(db, account_id, [NewLink(URL, rules=APP_STORES)])
    assert await location(redirect_server, link.token, **{"User-Agent": IPHONE}) == (
        "https://apps.apple.com/app/id1"
    )
    assert await location(redirect_server, link.token, **{"User-Agent": ANDROID}) == (
        "https://play.google.com/store/apps/details?id=x"
    )
    assert await location(redirect_server, link.token, **{"User-Agent": WHATSAPP}) == URL
    assert await location(redirect_server, link.token, **{"User-Agent": "Mozilla/5.0 (X11)"}) == URL


async def test_a_smart_click_event_says_where_the_tap_went_a_plain_one_is_unchanged(
    redirect_server: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """The event of a rule's tap carries destination, rule and variant; a plain link's event
    has the fields it always had and nothing after them."""
    smart, plain = await create_links(
        db, account_id, [NewLink(URL, rules=APP_STORES, variant=1), NewLink(URL)]
    )
    await location(redirect_server, smart.token, **{"User-Agent": ANDROID})
    await all_published(redirect_server)
    await location(redirect_server, plain.token, **{"User-Agent": ANDROID})
    await all_published(redirect_server)
    records = await consume(kafka_bootstrap, click_topic, 2, to_end=True)
    by_token = {clickevent.decode(r.value).token: r.value for r in records}
    event = clickevent.decode(by_token[smart.token])
    assert (event.destination, event.rule_index, event.variant_index) == (
        "https://play.google.com/store/apps/details?id=x",
        1,
        1,
    )
    assert len(orjson.loads(by_token[plain.token])) == 1 + len(clickevent.FIELDS)
    plain_event = clickevent.decode(by_token[plain.token])
    assert (plain_event.destination, plain_event.rule_index, plain_event.variant_index) == (
        None,
        None,
        None,
    )


async def test_a_variant_link_without_rules_records_its_variant(
    redirect_server: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """A link of variant 0 goes to its own URL and its click says variant 0, no rule."""
    [link] = await create_links(db, account_id, [NewLink("https://example.com/a", variant=0)])
    assert await location(redirect_server, link.token, **{"User-Agent": IPHONE}) == (
        "https://example.com/a"
    )
    await all_published(redirect_server)
    [record] = await consume(kafka_bootstrap, click_topic, 1, to_end=True)
    event = clickevent.decode(record.value)
    assert (event.destination, event.rule_index, event.variant_index) == (
        "https://example.com/a",
        None,
        0,
    )


async def test_changing_one_links_rules_reaches_the_worker(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """links.update with rules drops the cached link; the next tap follows the new rules,
    and removing them makes it plain again."""
    [link] = await create_links(db, account_id, [NewLink(URL)])
    assert await location(redirect_server, link.token, **{"User-Agent": IPHONE}) == URL
    await links.update(db, account_id, link.token, rules=APP_STORES)
    await wait_until(lambda: redirect_server.app[CACHE].find(link.token) is None)
    assert await location(redirect_server, link.token, **{"User-Agent": IPHONE}) == (
        "https://apps.apple.com/app/id1"
    )
    await links.update(db, account_id, link.token, rules=None)
    await wait_until(lambda: redirect_server.app[CACHE].find(link.token) is None)
    assert await location(redirect_server, link.token, **{"User-Agent": IPHONE}) == URL


async def test_retargeting_200000_links_reaches_two_workers_with_one_notification(
    redirect_env: dict[str, str], db: asyncpg.Connection, account_id: int, tmp_path: object
) -> None:
    """Every link of a 200,000-link campaign answers the new url and rules on two running
    workers soon after the change commits (measured here: printed), without dropping a
    single token from their caches."""
    env = {**redirect_env, "LINK_CACHE_ENTRIES": "300000"}
    specs = [NewLink("https://example.com/old", client_identifier="big") for _ in range(200_000)]
    async with (
        running(create_app(RedirectConfig.from_env(env), worker_index=0), make_handler) as one,
        running(create_app(RedirectConfig.from_env(env), worker_index=1), make_handler) as two,
    ):
        made = await create_links(db, account_id, specs)
        workers = [one, two]
        for worker in workers:
            cache = worker.app[CACHE]
            await wait_until(lambda c=cache: all(c.get(m.token) for m in made), within=120)
        sample = made[::20_000]
        assert await location(one, sample[0].token, **{"User-Agent": IPHONE}) == (
            "https://example.com/old"
        )
        invalidated = [w.app[LISTENER].invalidated for w in workers]
        started = time.perf_counter()
        async with db.transaction():
            count = await links.retarget(
                db, account_id, "big", target_url="https://example.com/new", rules=APP_STORES
            )
        committed = time.perf_counter()
        assert count == 200_000

        def retargeted() -> bool:
            for worker in workers:
                cache = worker.app[CACHE]
                for link in made[::1000]:
                    found = cache.find(link.token)
                    if found is None or found[0].target_url != "https://example.com/new":
                        return False
            return True

        await wait_until(retargeted, within=30, step=0.005)
        print(
            f"retarget of 200,000 links: {committed - started:.3f} s to commit, "
            f"{time.perf_counter() - committed:.3f} s until both workers answered it"
        )
        for worker in workers:
            for link in sample:
                assert await location(worker, link.token, **{"User-Agent": ANDROID}) == (
                    "https://play.google.com/store/apps/details?id=x"
                )
                assert await location(worker, link.token, **{"User-Agent": "curl/8"}) == (
                    "https://example.com/new"
                )
            assert len(worker.app[CACHE]) >= 200_000  # nothing was dropped
        assert [w.app[LISTENER].invalidated for w in workers] == invalidated


async def test_a_worker_that_missed_the_notification_catches_up(
    redirect_env: dict[str, str], db: asyncpg.Connection, account_id: int
) -> None:
    """A retargeting made while a worker was not listening is applied by its catch-up
    (campaign_destinations.changed_at), and links created after it keep their own url."""
    [old] = await create_links(db, account_id, [NewLink(URL, client_identifier="late")])
    async with running(create_app(RedirectConfig.from_env(redirect_env)), make_handler) as one:
        cache, listener = one.app[CACHE], one.app[LISTENER]
        await wait_until(lambda: cache.get(old.token) is not None)
        # As if the notification was lost: the row changes, then the worker catches up.
        async with db.transaction():
            await links.retarget(db, account_id, "late", target_url="https://example.com/moved")
        await wait_until(lambda: cache.find(old.token)[0].target_url.endswith("moved"))  # type: ignore[index]
        [new] = await create_links(
            db, account_id, [NewLink("https://example.com/fresh", client_identifier="late")]
        )
        await wait_until(lambda: cache.get(new.token) is not None)
        from datetime import UTC, datetime, timedelta

        await listener._catch_up(datetime.now(UTC) - timedelta(minutes=5))
        assert await location(one, new.token) == "https://example.com/fresh"
        assert await location(one, old.token) == "https://example.com/moved"


async def test_hostile_headers_on_a_link_with_rules_still_redirect(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """Bytes that are not UTF-8, a 6 KiB User-Agent and a garbled Accept-Language on a link
    with rules answer 302 (the link's url), never a 500."""
    spanish = rules.canonical(
        [
            {"when": {"language": ["es"], "country": ["ES"]}, "url": "https://example.com/es"},
            {"when": {"os": ["Android"]}, "url": "https://example.com/android"},
        ]
    )
    [link] = await create_links(db, account_id, [NewLink(URL, rules=spanish)])
    token = link.token.encode()
    requests = [
        b"User-Agent: \xff\xfe\xc3(Android\r\nAccept-Language: \xff;q=\xff",
        b"User-Agent: " + b"A" * 6000 + b"\r\nAccept-Language: " + b"es;q=1," * 800,
        b"User-Agent: Mozilla/5.0 (iPhone)\r\nAccept-Language: ;;;,,,q=,-,es-;q=abc",
        b"X-Forwarded-For: 88.0.0.1, \xff\r\nUser-Agent: Mozilla/5.0 (iPhone)",
    ]
    for extra in requests:
        data = (
            b"GET /"
            + token
            + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + extra
            + b"\r\nConnection: close\r\n\r\n"
        )
        assert await exchange(redirect_server, data) == [302]


async def test_the_warning_page_of_an_unsafe_link_with_rules_names_where_continue_leads(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """An unsafe link with rules warns about the page this phone will be sent to (the
    matching rule's), not the link's url that "continue" would not lead to."""
    [link] = await create_links(db, account_id, [NewLink(URL, unsafe=True, rules=APP_STORES)])
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{redirect_server.url}/{link.token}", headers={"User-Agent": IPHONE}
        ) as response,
    ):
        assert response.status == 200
        page = await response.text()
    assert "apps.apple.com" in page
    assert "example.com" not in page
    assert await location(
        redirect_server, f"{link.token}?continue=1", **{"User-Agent": IPHONE}
    ) == ("https://apps.apple.com/app/id1")


async def test_a_rules_only_retarget_keeps_the_url_of_links_made_after_an_earlier_retarget(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """A campaign's url is changed, links are added with their own url, then only its
    rules change: the added links keep their url on the worker, as in the database."""
    [old] = await create_links(db, account_id, [NewLink(URL, client_identifier="twice")])
    cache = redirect_server.app[CACHE]
    await wait_until(lambda: cache.get(old.token) is not None)
    async with db.transaction():
        await links.retarget(db, account_id, "twice", target_url="https://example.com/first")
    await wait_until(lambda: cache.find(old.token)[0].target_url.endswith("first"))  # type: ignore[index]
    [added] = await create_links(
        db, account_id, [NewLink("https://example.com/added", client_identifier="twice")]
    )
    await wait_until(lambda: cache.get(added.token) is not None)
    async with db.transaction():
        await links.retarget(db, account_id, "twice", target_url=None, rules=APP_STORES)
    await wait_until(lambda: cache.find(added.token)[0].rules is not None)  # type: ignore[index]
    assert (
        await db.fetchval("SELECT target_url FROM links WHERE token = $1", added.token)
        == "https://example.com/added"
    )
    assert await location(redirect_server, added.token, **{"User-Agent": "curl/8"}) == (
        "https://example.com/added"
    )
    assert await location(redirect_server, old.token, **{"User-Agent": "curl/8"}) == (
        "https://example.com/first"
    )
