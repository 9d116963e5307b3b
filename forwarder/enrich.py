"""User agent -> browser, OS, device type, device name and maker, robot or not.

Parsing uses ua-parser (the uap-core regular expressions, maintained by the
ua-parser project and released with fresh rules regularly; its Rust matcher
`ua-parser-rs` makes a parse take ~0.3 ms). A campaign's clicks come from a
few thousand distinct user agents, so results are kept in an LRU cache and a
parse is the exception. Robots are found four ways, in this order: the
project's rules in shortlink.previews, ua-parser's "Spider" device family, the
maintained crawler-user-agents list (shortlink.previews.listed), and the request
itself (HEAD, or no User-Agent at all).

What a parse finds is cut to MAX_NAME characters: ua-parser copies parts of the
user agent into the names (a made-up "browser" of 3,000 letters is a family), and
every name is stored, counted and forwarded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ua_parser import parse

from shortlink import previews

MOBILE_OS = frozenset(
    {
        "iOS",
        "Android",
        "BlackBerry OS",
        "BlackBerry Tablet OS",
        "Windows Phone",
        "KaiOS",
        "Symbian OS",
        "Tizen",
        "HarmonyOS",
        "Firefox OS",
    }
)
DESKTOP_OS = frozenset(
    {"Windows", "Mac OS X", "Linux", "Chrome OS", "Ubuntu", "Fedora", "FreeBSD", "OpenBSD"}
)
MAX_NAME = 64  # characters of a browser, OS, device or maker name (docs/forwarder.md)
_NO_DEVICE = frozenset({"Other", "Generic Smartphone", "Generic Feature Phone", "Spider"})


@dataclass(frozen=True, slots=True)
class Client:
    """What a click's user agent says about who clicked."""

    browser: str | None
    os: str | None
    device_type: str  # mobile, tablet, desktop, bot, unknown
    device_name: str | None  # DeviceName in click forwards
    device_manufacturer: str | None  # DeviceManufacturer
    is_bot: bool


NO_USER_AGENT = Client(None, None, "bot", None, None, True)


def classify(user_agent: str | None, method: str) -> Client:
    """Describe the clicker; HEAD requests and missing user agents are robots."""
    if not user_agent:
        return NO_USER_AGENT
    client = _classify_user_agent(user_agent)
    if method == "HEAD" and not client.is_bot:
        # A phone's browser never sends HEAD on a tap: a preview fetcher does.
        return Client(client.browser, client.os, "bot", None, None, True)
    return client


@functools.lru_cache(maxsize=20_000)
def _classify_user_agent(user_agent: str) -> Client:
    result = parse(user_agent)
    browser = _name(result.user_agent.family) if result.user_agent else None
    os = _name(result.os.family) if result.os else None
    device = result.device
    spider = device is not None and device.family == "Spider"
    robot = previews.match(user_agent)
    if robot is None and not spider:
        robot = previews.listed(user_agent)
    if robot is not None or spider:
        return Client(_name(robot) or browser, os, "bot", None, None, True)
    family = device.family if device and device.family not in _NO_DEVICE else None
    maker = (
        device.brand
        if device and device.brand and not device.brand.startswith(("Generic", "Spider"))
        else None
    )
    return Client(
        browser,
        os,
        _device_type(user_agent, os, family),
        _name(family),
        _name(maker),
        False,
    )


def _name(value: str | None) -> str | None:
    """A name as stored: at most MAX_NAME characters; None for nothing."""
    if not value:
        return None
    return value if len(value) <= MAX_NAME else value[:MAX_NAME]


def _device_type(user_agent: str, os: str | None, device_name: str | None) -> str:
    if device_name == "iPad" or "Tablet" in user_agent:
        return "tablet"
    if os == "Android" and "Mobile" not in user_agent:
        return "tablet"  # Android phones say "Mobile"; tablets do not
    if os in MOBILE_OS or "Mobile" in user_agent:
        return "mobile"
    if os in DESKTOP_OS:
        return "desktop"
    return "unknown"


def cache_info() -> functools._CacheInfo:
    """Hits and misses of the user-agent cache (for metrics)."""
    return _classify_user_agent.cache_info()
