"""Who is not a person: preview fetchers, crawlers and HTTP libraries.

Messaging apps and social sites fetch a link to draw its preview, security
scanners fetch it to check it, scripts fetch it because they can. These clicks
are recorded and flagged as bots; they never count as the first click or as a
unique click. To teach the forwarder a new one, add a line to RULES: a
case-insensitive substring of the User-Agent and the name it is reported under.
HEAD requests and requests without a User-Agent are treated as robots too
(forwarder.enrich): a phone's browser sends neither.

After these rules, the forwarder consults a maintained list: the patterns of the
`crawler-user-agents` package (Martin Monperrus' list, ~1,500 regular expressions
of crawlers, preview fetchers, scanners and HTTP libraries, MIT licence, released
often). Python's re would take about 1 ms to try them all on one user agent, so
they are compiled into one RE2 expression, which matches in one linear pass
(~3 us); a pattern RE2 cannot read (none today) is tried with re instead. The
forwarder asks once per distinct user agent (forwarder.enrich's cache).
"""

from __future__ import annotations

import re
from typing import Any

import re2
from crawleruseragents import CRAWLER_USER_AGENTS_DATA

# (substring of the User-Agent, lower case; what fetched it). First match wins.
RULES: tuple[tuple[str, str], ...] = (
    # Messaging apps drawing link previews
    ("whatsapp", "WhatsApp preview"),
    ("telegrambot", "Telegram preview"),
    ("viber", "Viber preview"),
    ("skypeuripreview", "Skype preview"),
    ("discordbot", "Discord preview"),
    ("slackbot", "Slack preview"),
    ("slack-imgproxy", "Slack preview"),
    ("mattermost", "Mattermost preview"),
    ("line-poker", "LINE preview"),
    ("kakaotalk-scrap", "KakaoTalk preview"),
    # Snap's fetcher. Snapchat's in-app browser says "Snapchat/12.80.0.33": a person.
    ("snap url preview", "Snapchat preview"),
    ("microsoftpreview", "Microsoft preview"),  # Teams and Outlook
    # iMessage previews announce themselves as Facebook and Twitter bots.
    ("facebookexternalhit", "Facebook preview"),
    ("facebot", "Facebook preview"),
    ("meta-externalagent", "Meta crawler"),
    ("twitterbot", "X/Twitter preview"),
    ("linkedinbot", "LinkedIn preview"),
    ("pinterestbot", "Pinterest preview"),
    ("redditbot", "Reddit preview"),
    ("vkshare", "VK preview"),
    ("embedly", "Embedly"),
    ("iframely", "Iframely"),
    ("google-pagerenderer", "Google preview"),
    ("googleother", "Google crawler"),
    # Search engines and other crawlers
    ("googlebot", "Googlebot"),
    ("bingbot", "Bingbot"),
    ("applebot", "Applebot"),
    ("yandexbot", "YandexBot"),
    ("baiduspider", "Baidu"),
    ("duckduckbot", "DuckDuckBot"),
    ("petalbot", "PetalBot"),
    ("ahrefsbot", "Ahrefs"),
    ("semrushbot", "Semrush"),
    # Link scanners used by carriers and mail/SMS security products
    ("barracuda", "Barracuda scanner"),
    ("proofpoint", "Proofpoint scanner"),
    ("mimecast", "Mimecast scanner"),
    ("safebrowsing", "Safe Browsing"),
    # HTTP libraries and tools: not a phone
    ("curl/", "curl"),
    ("wget/", "Wget"),
    ("python-requests", "python-requests"),
    ("python-urllib", "python-urllib"),
    ("aiohttp", "aiohttp"),
    ("httpx", "httpx"),
    ("go-http-client", "Go http client"),
    ("okhttp", "OkHttp"),
    ("java/", "Java"),
    ("apache-httpclient", "Apache HttpClient"),
    ("node-fetch", "node-fetch"),
    ("axios", "axios"),
    ("postmanruntime", "Postman"),
    ("headlesschrome", "headless Chrome"),
    ("phantomjs", "PhantomJS"),
)
# No generic "bot" rule: "CUBOT" is a phone maker. Other crawlers are caught by
# the list below and by ua-parser, which classifies them as device "Spider"
# (forwarder.enrich).


def match(user_agent: str) -> str | None:
    """The name of the preview fetcher or robot this User-Agent belongs to, if any."""
    lowered = user_agent.lower()
    for needle, name in RULES:
        if needle in lowered:
            return name
    return None


def _compile_list() -> tuple[Any, re.Pattern[str] | None]:
    readable: list[str] = []
    others: list[str] = []
    for entry in CRAWLER_USER_AGENTS_DATA:
        pattern = entry["pattern"]
        try:
            re2.compile(pattern)
        except re2.error:
            others.append(pattern)
        else:
            readable.append(pattern)
    options = re2.Options()
    options.max_mem = 64 << 20  # room for the lazy DFA of ~1,500 alternatives
    fast = re2.compile("|".join(f"(?:{p})" for p in readable), options) if readable else None
    slow = re.compile("|".join(f"(?:{p})" for p in others)) if others else None
    return fast, slow


_LISTED, _LISTED_OTHERS = _compile_list()
LISTED_PATTERNS = len(CRAWLER_USER_AGENTS_DATA)


def listed(user_agent: str) -> str | None:
    """The text by which the crawler-user-agents list knows this User-Agent
    (e.g. "GPTBot"), if it lists it. Patterns are case-sensitive, as published."""
    for pattern in (_LISTED, _LISTED_OTHERS):
        if pattern is not None:
            try:
                found = pattern.search(user_agent)
            except UnicodeError:  # a lone surrogate: RE2 reads UTF-8 only
                continue
            if found is not None:
                return str(found.group(0)) or "listed crawler"
    return None
