"""The click events tests make: by default a person tapping on an iPhone."""

from __future__ import annotations

from forwarder.enrich import classify
from shortlink.links import LinkEntry
from tests.clicks import clicks, events

LINK = LinkEntry(
    7, "AbCdEfG", 1, "https://e.example/", "447700900001", "m1", "spring", 0, 2e9, False, False
)


def test_clicks_default_to_a_person_on_an_iphone() -> None:
    """A tap made without a user agent is one the forwarder classifies as a person's iPhone, so
    tests that count people (not bots) need not say which phone."""
    [event] = events(clicks([LINK], at=1_700_000_000.0))
    client = classify(event.user_agent, event.method)
    assert (client.device_type, client.device_name, client.is_bot) == ("mobile", "iPhone", False)
    assert (event.token, event.link_id, event.clicked_at_ms) == ("AbCdEfG", 7, 1_700_000_000_000)


def test_clicks_take_the_agent_and_method_they_are_given() -> None:
    """An explicit agent and HEAD make a preview bot's click."""
    [event] = events(clicks([LINK], user_agent="WhatsApp/2.23.20.0 A", method="HEAD"))
    assert event.user_agent == "WhatsApp/2.23.20.0 A"
    assert classify(event.user_agent, event.method).is_bot
