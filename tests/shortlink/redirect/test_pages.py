"""The redirect server's pages for people: static, escaped, without scripts, and robots.txt."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from shortlink.redirect.pages import (
    CONTINUE_PARAMETER,
    DISABLED,
    EXPIRED,
    HTML_HEADERS,
    NOT_FOUND,
    ROBOTS_TXT,
    UNAVAILABLE,
    warning_page,
)


class Elements(HTMLParser):
    """The start tags of a page, with their attributes."""

    def __init__(self, page: bytes) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(page.decode())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


@pytest.mark.parametrize(
    ("page", "title"),
    [
        (NOT_FOUND, "Link not found"),
        (EXPIRED, "Link expired"),
        (DISABLED, "Link no longer available"),
        (UNAVAILABLE, "Try again"),
        (warning_page("Ab3dE9", "https://shop.example.com/p"), "Warning: this link may be unsafe"),
    ],
)
def test_every_page_is_a_small_html_document_without_scripts(page: bytes, title: str) -> None:
    """Each page is UTF-8 HTML with its title, kept out of search engines, with no script."""
    text = page.decode()
    assert text.startswith("<!doctype html>")
    assert f"<title>{title}</title>" in text
    tags = [tag for tag, _ in Elements(page).tags]
    assert "script" not in tags
    assert ("meta", {"name": "robots", "content": "noindex"}) in Elements(page).tags
    assert len(page) < 2048


def test_pages_are_served_out_of_caches_frames_and_search_engines() -> None:
    """The headers forbid caching, framing, sniffing, referrers, indexing and any script."""
    assert HTML_HEADERS["Content-Type"] == "text/html; charset=utf-8"
    assert HTML_HEADERS["Cache-Control"] == "no-store"
    assert HTML_HEADERS["X-Frame-Options"] == "DENY"
    assert HTML_HEADERS["X-Robots-Tag"] == "noindex, nofollow"
    assert HTML_HEADERS["Referrer-Policy"] == "no-referrer"
    assert "script-src" not in HTML_HEADERS["Content-Security-Policy"]
    assert HTML_HEADERS["Content-Security-Policy"].startswith("default-src 'none'")


def test_the_warning_page_names_the_host_and_links_onward() -> None:
    """The warning names the target's host and links to the same token with continue=1."""
    page = warning_page("Ab3dE9", "https://shop.example.com/spring?x=1&y=2")
    text = page.decode()
    assert "<strong>shop.example.com</strong>" in text
    assert "https://shop.example.com/spring?x=1&amp;y=2" in text
    [link] = [attrs for tag, attrs in Elements(page).tags if tag == "a"]
    assert link["href"] == f"/Ab3dE9?{CONTINUE_PARAMETER}=1"
    assert link["rel"] == "nofollow noreferrer"


def test_the_warning_page_escapes_the_target() -> None:
    """Markup in the target URL, in its host or path, is shown as text, never as markup."""
    page = warning_page("Ab3dE9", 'https://evil.example/"><script>alert(1)</script>')
    text = page.decode()
    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    assert re.search(r'href="/Ab3dE9\?continue=1"', text)
    odd = warning_page("Ab3dE9", "not a url <b>")
    assert "<b>" not in odd.decode()


def test_robots_txt_disallows_everything() -> None:
    """Crawlers are asked to fetch nothing from the short domain."""
    assert ROBOTS_TXT == b"User-agent: *\nDisallow: /\n"
