"""User agents: browser, OS, device type and maker; robots told apart from people."""

from __future__ import annotations

import pytest

from forwarder import previews
from forwarder.enrich import classify

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
GALAXY = (
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.144 Mobile Safari/537.36"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/16.6 Mobile/15E148 Safari/604.1"
)
MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Safari/605.1.15"
)
BLACKBERRY = (
    "Mozilla/5.0 (BlackBerry; U; BlackBerry 9800; en-US) AppleWebKit/534.8+ (KHTML, like Gecko) "
    "Version/6.0.0.446 Mobile"
)
CUBOT = (
    "Mozilla/5.0 (Linux; Android 9; CUBOT X20 PRO) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/119.0.0.0 Mobile Safari/537.36"
)


@pytest.mark.parametrize(
    ("user_agent", "browser", "os", "device_type", "name", "maker"),
    [
        (IPHONE, "Mobile Safari", "iOS", "mobile", "iPhone", "Apple"),
        (GALAXY, "Chrome Mobile", "Android", "mobile", "Samsung SM-S918B", "Samsung"),
        (IPAD, "Mobile Safari", "iOS", "tablet", "iPad", "Apple"),
        (MAC, "Safari", "Mac OS X", "desktop", "Mac", "Apple"),
        (
            BLACKBERRY,
            "BlackBerry WebKit",
            "BlackBerry OS",
            "mobile",
            "BlackBerry 9800",
            "BlackBerry",
        ),
    ],
)
def test_people_are_described(
    user_agent: str, browser: str, os: str, device_type: str, name: str, maker: str
) -> None:
    """Browsers on phones, tablets and computers get browser, OS, type, device and maker."""
    client = classify(user_agent, "GET")
    assert (client.browser, client.os, client.device_type) == (browser, os, device_type)
    assert (client.device_name, client.device_manufacturer) == (name, maker)
    assert client.is_bot is False


@pytest.mark.parametrize(
    "user_agent",
    [
        "WhatsApp/2.23.20.0 A",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko)"
        " Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
        "TelegramBot (like TwitterBot)",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; SomeNewCrawler/1.0; +https://example.com/crawler)",
        "curl/8.5.0",
        "python-requests/2.31.0",
    ],
)
def test_previews_and_robots_are_bots(user_agent: str) -> None:
    """Preview fetchers, crawlers (by rule or by ua-parser) and HTTP tools are bots."""
    client = classify(user_agent, "GET")
    assert client.is_bot is True
    assert client.device_type == "bot"


def test_head_and_missing_user_agent_are_bots() -> None:
    """A HEAD request or a request without a User-Agent is never a person."""
    assert classify(IPHONE, "HEAD").is_bot is True
    assert classify(None, "GET").is_bot is True
    assert classify("", "GET").is_bot is True


def test_a_phone_maker_named_like_a_bot_is_a_person() -> None:
    """CUBOT phones are people: there is no blanket 'bot' substring rule."""
    client = classify(CUBOT, "GET")
    assert client.is_bot is False
    assert client.device_type == "mobile"


def test_rules_are_lower_case_substrings() -> None:
    """The rule table is easy to extend: lower-case needles, matched case-insensitively."""
    assert all(needle == needle.lower() for needle, _ in previews.RULES)
    assert previews.match("Mozilla/5.0 WHATSAPP/2.0") == "WhatsApp preview"
    assert previews.match(IPHONE) is None
