"""Click events as tests make them: links of an account, encoded events, a phone's agent."""

from __future__ import annotations

import time

import asyncpg

from shortlink import clickevent
from shortlink.links import LinkEntry, NewLink, create_links
from tests.infra import publish_events

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


async def make_links(
    db: asyncpg.Connection, account_id: int, count: int, **fields: object
) -> list[LinkEntry]:
    """Links of the account, as the redirect server would have them cached."""
    specs = [
        NewLink(
            target_url=str(fields.get("target_url", f"https://shop.example.com/p/{i}")),
            phone_number=str(fields.get("phone_number", f"4477009{i:05d}")),
            client_ref=f"msg-{i}",
            client_identifier=str(fields.get("client_identifier", "spring-sale")),
        )
        for i in range(count)
    ]
    created = await create_links(db, account_id, specs)
    return [LinkEntry.made(account_id, c, s) for c, s in zip(created, specs, strict=True)]


_IDS = clickevent.EventIds()


def clicks(
    links: list[LinkEntry],
    *,
    user_agent: str | None = IPHONE,
    method: str = "GET",
    ip: str = "203.0.113.7",
    warning: bool = False,
    at: float | None = None,
    smart: clickevent.Smart | None = None,
) -> list[tuple[str, bytes]]:
    """One encoded click event per link (`smart`: where a link with rules or variants
    sent it, appended as the redirect server appends it)."""
    now = time.time() if at is None else at
    ids = _IDS.take(len(links), int(now * 1000))
    return [
        (
            link.token,
            clickevent.encode(
                event_id,
                (*clickevent.facts(link, now, user_agent, ip, None, method, warning), *smart)
                if smart
                else clickevent.facts(link, now, user_agent, ip, None, method, warning),
            ),
        )
        for event_id, link in zip(ids, links, strict=True)
    ]


async def publish(kafka_bootstrap: str, topic: str, values: list[tuple[str, bytes]]) -> None:
    """Put encoded click events on the topic, as the redirect server would."""
    await publish_events(kafka_bootstrap, topic, values)


def events(values: list[tuple[str, bytes]]) -> list[clickevent.ClickEvent]:
    """The click events behind encoded (token, event) pairs, as the forwarder decodes them."""
    return [clickevent.decode(value) for _, value in values]
