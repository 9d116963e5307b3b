"""Erasure and the redirect workers: the cached number is gone within a second."""

from __future__ import annotations

import asyncpg

from shortlink import clickevent, erasures
from shortlink.redirect.cache import CACHE
from shortlink.redirect.entries import unpack
from tests.infra import RunningServer, all_published, consume, tap, wait_until
from tests.shortlink.redirect.test_app import make_link

PHONE = "447700900123"


async def test_the_redirect_caches_drop_the_number_within_a_second(
    redirect_server: RunningServer,
    cold_redirect_server: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """Every worker holding the link drops its number within 1 s; the link keeps redirecting
    and its next tap's click event carries no number."""
    token = await make_link(db, account_id, phone_number=PHONE)
    workers = (redirect_server, cold_redirect_server)
    for worker in workers:
        assert await tap(worker, token) == 302
        found = worker.app[CACHE].find(token)
        assert found is not None
        assert unpack(found[1])[1] == PHONE
    erased = await erasures.erase(db, account_id, PHONE)
    assert erased.links == 1

    def forgotten() -> bool:
        for worker in workers:
            found = worker.app[CACHE].find(token)
            if found is not None and unpack(found[1])[1] is not None:
                return False
        return True

    await wait_until(forgotten, within=1.0, step=0.01, what="the number dropped everywhere")
    assert await tap(redirect_server, token) == 302
    await all_published(redirect_server)
    published = await consume(kafka_bootstrap, click_topic, 3, to_end=True)
    numbers = [clickevent.decode(record.value).phone_number for record in published]
    assert numbers[-1] is None
