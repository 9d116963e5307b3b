"""Expired links go somewhere useful: the link's expired_url, the account's, else 410."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from shortlink import accounts, changes, links
from shortlink.redirect.cache import CACHE
from shortlink.redirect.expired import ExpiredPlaces
from shortlink.redirect.listener import LISTENER
from shortlink.redirect.publisher import PUBLISHER
from tests.infra import RunningServer, wait_until
from tests.shortlink.redirect.test_app import get, make_link

PAST = datetime.now(UTC) - timedelta(seconds=1)


async def test_an_expired_link_goes_to_its_own_expired_url_and_records_nothing(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """302 to the link's expired_url, uncacheable, and no click is published for it."""
    token = await make_link(db, account_id, expires_at=PAST, expired_url="https://e.x/over")
    publisher = redirect_server.app[PUBLISHER]
    before = publisher.submitted
    for _ in range(2):  # the miss, then the cache hit
        response = await get(redirect_server, f"/{token}")
        assert response.status == 302
        assert response.headers["Location"] == "https://e.x/over"
        assert response.headers["Cache-Control"] == "private, max-age=0"
    assert publisher.submitted == before


async def test_a_live_or_disabled_link_ignores_its_expired_url(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """A live link still goes to its target; a disabled one answers 410."""
    token = await make_link(db, account_id, expired_url="https://e.x/over")
    response = await get(redirect_server, f"/{token}")
    assert response.headers["Location"].startswith("https://example.com/landing")
    assert await links.disable(db, account_id, token)

    async def gone() -> bool:
        return (await get(redirect_server, f"/{token}")).status == 410

    await wait_until(gone, within=1.0, step=0.02, what="410 once disabled")


async def test_the_accounts_expired_url_reaches_every_worker_within_a_second(
    redirect_server: RunningServer,
    cold_redirect_server: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
) -> None:
    """Set, changed and removed on the account, its expired_url is what every worker answers
    for its expired links within 1 s; a link's own expired_url wins over it."""
    plain = await make_link(db, account_id, expires_at=PAST)
    own = await make_link(db, account_id, expires_at=PAST, expired_url="https://e.x/own")
    workers = (redirect_server, cold_redirect_server)
    for worker in workers:
        assert (await get(worker, f"/{plain}")).status == 410  # cached from here on

    async def answers(location: str | None) -> bool:
        for worker in workers:
            response = await get(worker, f"/{plain}")
            if response.headers.get("Location") != location:
                return False
            if (await get(worker, f"/{own}")).headers.get("Location") != "https://e.x/own":
                return False
        return True

    for url in ("https://e.x/account", "https://e.x/changed", None):
        await accounts.update_settings(db, account_id, expired_url=url)
        await wait_until(
            lambda url=url: answers(url), within=1.0, step=0.02, what=f"{url} everywhere"
        )
    assert (await get(redirect_server, f"/{plain}")).status == 410
    # The account's change dropped no cached link: the hit path stays a hit.
    assert redirect_server.app[CACHE].find(plain) is not None


async def test_the_poll_brings_an_accounts_expired_url_without_notifications(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """A change made without a notification (as if it were missed) is read by the listener's
    reload, the one its poll and its reconnects make."""
    token = await make_link(db, account_id, expires_at=PAST)
    await db.execute(
        "UPDATE accounts SET expired_url = 'https://e.x/quiet' WHERE id = $1", account_id
    )
    assert (await get(redirect_server, f"/{token}")).status == 410
    listener = redirect_server.app[LISTENER]
    await listener.places.reload(db)
    assert (await get(redirect_server, f"/{token}")).headers["Location"] == "https://e.x/quiet"


@pytest.mark.parametrize(
    "payload",
    [
        "@",
        "@x https://e.x/",
        "@-1 https://e.x/",
        "@1" + "9" * 30 + " x",
        "@１ https://e.x/",
        "+1:2",
    ],
)
def test_payloads_that_are_not_account_changes_change_nothing(payload: str) -> None:
    """Odd payloads are not applied as an account's expired_url."""
    places = ExpiredPlaces()
    places.urls[1] = "https://e.x/kept"
    applied = places.notified(payload)
    assert places.urls == {1: "https://e.x/kept"}
    assert not applied


def test_an_account_payload_sets_and_removes() -> None:
    """`@id url` sets the account's URL, `@id ` removes it."""
    places = ExpiredPlaces()
    assert places.notified("@7 https://e.x/a b")
    assert places.urls == {7: "https://e.x/a b"}
    assert changes.parse_account("@7 ") == (7, None)
    assert places.notified("@7 ")
    assert places.urls == {}


async def test_an_expired_url_no_header_can_carry_is_the_410_page(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """A stored expired_url with a line break (written past the API) answers 410, never a 500."""
    token = await make_link(db, account_id, expires_at=PAST, expired_url="https://e.x/a\r\nX: y")
    assert (await get(redirect_server, f"/{token}")).status == 410
