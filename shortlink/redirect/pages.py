"""The few HTML pages the redirect server shows people, and robots.txt.

Pages are small, static where possible (built once), carry no scripts, and are
served with headers that keep them out of caches, search engines and frames.
"""

from __future__ import annotations

import html
from urllib.parse import urlsplit

CONTINUE_PARAMETER = "continue"

HTML_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Robots-Tag": "noindex, nofollow",
}

ROBOTS_TXT = b"User-agent: *\nDisallow: /\n"

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5;color:#222}a.button{display:inline-block;padding:.6rem 1rem;"
    "background:#b00020;color:#fff;border-radius:.3rem;text-decoration:none}"
    ".url{word-break:break-all;color:#555;font-size:.9rem}"
)


def _page(title: str, body: str) -> bytes:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<meta name=robots content=noindex><title>{title}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    ).encode()


NOT_FOUND = _page(
    "Link not found",
    "<h1>Link not found</h1><p>This short link does not exist. Check that it was copied "
    "completely.</p>",
)

EXPIRED = _page(
    "Link expired",
    "<h1>This link has expired</h1><p>The short link you followed is no longer valid.</p>",
)

DISABLED = _page(
    "Link no longer available",
    "<h1>Link no longer available</h1><p>The sender has disabled this short link.</p>",
)

TOO_MANY = _page(
    "Too many requests",
    "<h1>Too many requests</h1><p>This address asked for too many links that do not exist. "
    "Please wait a minute.</p>",
)

UNAVAILABLE = _page(
    "Try again",
    "<h1>Temporarily unavailable</h1><p>Please try the link again in a moment.</p>",
)


def warning_page(token: str, target_url: str) -> bytes:
    """The interstitial shown before an unsafe link: names the target's host, links onward."""
    parts = urlsplit(target_url)
    host = html.escape(parts.hostname or target_url)
    return _page(
        "Warning: this link may be unsafe",
        "<h1>This link may be unsafe</h1>"
        f"<p>The sender has marked this link as unsafe. It leads to <strong>{host}</strong>.</p>"
        f"<p class=url>{html.escape(target_url)}</p>"
        f'<p><a class=button href="/{token}?{CONTINUE_PARAMETER}=1" rel="nofollow noreferrer">'
        f"Continue to {host}</a></p>"
        "<p>If you did not expect this message, close this page.</p>",
    )
