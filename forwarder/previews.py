"""Who is not a person: preview fetchers, crawlers and HTTP libraries.

Messaging apps and social sites fetch a link to draw its preview, security
scanners fetch it to check it, scripts fetch it because they can. These clicks
are recorded and flagged as bots; they never count as the first click or as a
unique click. To teach the forwarder a new one, add a line to RULES: a
case-insensitive substring of the User-Agent and the name it is reported under.
HEAD requests and requests without a User-Agent are treated as robots too
(forwarder.enrich): a phone's browser sends neither.
"""

from __future__ import annotations

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
    ("snapchat", "Snapchat preview"),
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
# ua-parser, which classifies them as device "Spider" (forwarder.enrich).


def match(user_agent: str) -> str | None:
    """The name of the preview fetcher or robot this User-Agent belongs to, if any."""
    lowered = user_agent.lower()
    for needle, name in RULES:
        if needle in lowered:
            return name
    return None
