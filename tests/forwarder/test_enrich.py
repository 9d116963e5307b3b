"""User agents: browser, OS, device type and maker; robots told apart from people."""

from __future__ import annotations

import pytest
from ua_parser import parse

from forwarder.enrich import classify
from shortlink import previews
from tests.clicks import IPHONE

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
# Phones' browsers and apps' in-app browsers: people, whatever the lists say.
PHONES = {
    "Safari on iPhone": IPHONE,
    "Chrome on Android": (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Mobile Safari/537.36"
    ),
    "Samsung Internet": (
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36"
    ),
    "Chrome on iPhone": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1"
    ),
    "Firefox on Android": "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0",
    "Instagram in-app": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 Instagram 326.0.3.30.91 (iPhone14,3; iOS 17_4; en_US; "
        "en; scale=3.00; 1284x2778; 590431633)"
    ),
    "Facebook in-app, iOS": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/450.0.0.38.108;FBBV/564431005;"
        "FBDV/iPhone14,5;FBMD/iPhone;FBSN/iOS;FBSV/17.3;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5]"
    ),
    "Facebook in-app, Android": (
        "Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.193 Mobile Safari/537.36 "
        "[FB_IAB/FB4A;FBAV/446.0.0.36.108;]"
    ),
    "Snapchat in-app": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 Snapchat/12.80.0.33 (like Safari/8617.2.4.10.8, panda)"
    ),
    "TikTok in-app": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 musical_ly_32.5.0 JsSdk/2.0 NetType/WIFI "
        "Channel/App Store ByteLocale/en Region/US WKWebView/1 BytedanceWebview/d8a21c6"
    ),
    "WeChat in-app": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.42(0x18002a2d) NetType/WIFI "
        "Language/en"
    ),
    "Google app on iPhone": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) GSA/310.0.621847263 Mobile/15E148 Safari/604.1"
    ),
}
MICROSOFT_PREVIEW = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/112.0.0.0 Safari/537.36 Edg/112.0.1722.48 MicrosoftPreview/2.0 "
    "+https://aka.ms/MicrosoftPreview"
)
SNAP_PREVIEW = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/64.0.3282.140 Safari/537.36 Snap URL Preview Service; bot; snapchat.com"
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


@pytest.mark.parametrize("name", sorted(PHONES))
def test_phone_browsers_and_in_app_browsers_are_people(name: str) -> None:
    """Phone browsers and the in-app browsers of Instagram, Facebook, Snapchat, TikTok and
    WeChat are people: no rule of ours and no pattern of the crawler list flags them."""
    user_agent = PHONES[name]
    assert previews.match(user_agent) is None
    assert previews.listed(user_agent) is None
    client = classify(user_agent, "GET")
    assert client.is_bot is False
    assert client.device_type == "mobile"


@pytest.mark.parametrize(
    ("user_agent", "name"),
    [
        (SNAP_PREVIEW, "Snapchat preview"),
        (MICROSOFT_PREVIEW, "Microsoft preview"),
    ],
)
def test_snap_and_microsoft_previews_are_previews(user_agent: str, name: str) -> None:
    """Snap's URL preview fetcher and MicrosoftPreview (Teams, Outlook) are preview bots."""
    client = classify(user_agent, "GET")
    assert (client.is_bot, client.device_type, client.browser) == (True, "bot", name)


@pytest.mark.parametrize(
    ("user_agent", "listed_as"),
    [
        (
            "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile "
            "Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)",
            "Bytespider",
        ),
        ("Mediapartners-Google", "Mediapartners-Google"),
        ("Mozilla/4.5 (compatible; HTTrack 3.0x; Windows 98)", "HTTrack"),
        ("Mozilla/5.0 (compatible; coccoc/1.0; +http://help.coccoc.com/)", "coccoc"),
    ],
)
def test_crawlers_of_the_maintained_list_are_bots(user_agent: str, listed_as: str) -> None:
    """A crawler neither our rules nor ua-parser know is caught by crawler-user-agents."""
    assert previews.match(user_agent) is None
    device = parse(user_agent).device
    assert device is None or device.family != "Spider"
    assert previews.listed(user_agent) == listed_as
    client = classify(user_agent, "GET")
    assert client.is_bot is True
    assert client.device_type == "bot"
