"""What counts as a link in free text and where it ends."""

from __future__ import annotations

import itertools
import time

import pytest

from shortlink.api import linkfind
from shortlink.api.linkfind import find_all, is_link, leading_link, target, trim


@pytest.mark.parametrize(
    "text",
    [
        "xoxzo.com/en/",
        "www.example.co.uk",
        "example.com",
        "EXAMPLE.COM",
        "shop.example.com?id=9",
        "tx9.in/a#top",
        "get.sh/install",
        "notes.md/",
        "sub.domain.example.org/path/to",
        "xn--bcher-kva.de",
    ],
)
def test_domain_names_with_or_without_a_path_are_links(text: str) -> None:
    """A name whose last label is an ICANN top-level domain, with a label before it, is a link."""
    assert is_link(text)


@pytest.mark.parametrize(
    "text",
    [
        "readme.md",
        "setup.py",
        "photos.zip",
        "clip.mov",
        "e.g",
        "i.e",
        "3.5",
        "v1.2",
        "file.txt",
        "index.html",
        "node.js",
        "Hello.World",
        "co.uk",
        "user@example.com",
        "example.invalid",
        "localhost",
        "-bad.example.com",
        "bücher.de",
    ],
)
def test_file_names_abbreviations_and_numbers_are_not_links(text: str) -> None:
    """File names, abbreviations, versions, addresses and unknown suffixes are not links."""
    assert not is_link(text)


@pytest.mark.parametrize(
    ("candidate", "url"),
    [
        ("https://en.wikipedia.org/wiki/Foo_(bar))", "https://en.wikipedia.org/wiki/Foo_(bar)"),
        ("https://en.wikipedia.org/wiki/Foo_(bar)", "https://en.wikipedia.org/wiki/Foo_(bar)"),
        ("https://a.example/x),", "https://a.example/x"),
        ("https://a.example/[1]]", "https://a.example/[1]"),
        ("https://a.example/x。", "https://a.example/x"),
        ("https://a.example/x！」", "https://a.example/x"),
        ("example.com/a?!...", "example.com/a"),
        ("https://a.example/x'\"»…", "https://a.example/x"),
    ],
)
def test_closing_punctuation_stays_outside_balanced_brackets_inside(
    candidate: str, url: str
) -> None:
    """Trailing punctuation is not the URL's; a bracket it opened and closes is."""
    assert trim(candidate) == url


def test_a_link_ends_at_cjk_punctuation() -> None:
    """Full-width punctuation ends a link even with text glued after it."""
    assert leading_link("https://a.example/x。ありがとう") == "https://a.example/x"
    assert leading_link("xoxzo.com、詳しく") == "xoxzo.com"
    assert leading_link("(https://a.example/x)") is None


def test_links_found_anywhere() -> None:
    """Every link in order; none inside an address, another URL or a file path."""
    body = (
        "Mail user@example.com or john.smith.name@x.com, see docs/readme.md, e.g. 3.5 v1.2; "
        "(see https://en.wikipedia.org/wiki/Foo_(bar)) and xoxzo.com/en/. "
        "詳細はexample.jp。 https://x.example/?u=foo.com www.a.example"
    )
    assert [body[start:end] for start, end in find_all(body)] == [
        "https://en.wikipedia.org/wiki/Foo_(bar)",
        "xoxzo.com/en/",
        "example.jp",
        "https://x.example/?u=foo.com",
        "www.a.example",
    ]


def test_targets_get_https_unless_they_have_a_scheme() -> None:
    """A www. name or a bare domain points at https://; a URL with a scheme as written."""
    assert target("xoxzo.com/en/") == "https://xoxzo.com/en/"
    assert target("www.a.example") == "https://www.a.example"
    assert target("http://a.example/") == "http://a.example/"
    assert target("readme.md") == "readme.md"


def _trim_by_recounting(candidate: str) -> str:
    """trim as first written: count the brackets again for each character cut."""
    closing = {")": "(", "]": "[", "}": "{"}
    end = len(candidate)
    while end:
        last = candidate[end - 1]
        opener = closing.get(last)
        if opener is not None:
            if candidate.count(opener, 0, end) > candidate.count(last, 0, end - 1):
                break
        elif last not in linkfind._TRAILING:
            break
        end -= 1
    return candidate[:end]


def test_trim_keeps_its_rule() -> None:
    """The same ends as counting again at each character, on every mix of brackets and stops."""
    pieces = ["(", ")", "[", "]", "{", "}", ".", ",", "a", "/", "」", "'"]
    for candidate in ("x.com/" + "".join(p) for p in itertools.product(pieces, repeat=5)):
        assert trim(candidate) == _trim_by_recounting(candidate), candidate


@pytest.mark.parametrize("tail", [")" * 200_000, ")." * 100_000, "(" * 100_000 + ")" * 100_001])
def test_a_long_run_of_closing_punctuation_takes_linear_time(tail: str) -> None:
    """A template value or body ending in 200,000 brackets and stops (a value has no length
    limit below MAX_REQUEST_BYTES) is trimmed at once, not in seconds (quadratic)."""
    started = time.perf_counter()
    url = trim("x.com/" + tail)
    assert time.perf_counter() - started < 0.5
    assert url == "x.com/" + ("(" * 100_000 + ")" * 100_000 if tail.startswith("(") else "")


@pytest.mark.parametrize(
    "body",
    [
        "Besuchen Sie münchen.de heute",  # not "nchen.de"
        "Besuchen Sie mu\u0308nchen.de heute",  # the same, decomposed (a combining mark)
        "Olá, veja promoção.com.br agora",  # not "o.com.br"
        "GO TO ZÜRICH.CH",  # not "RICH.CH"
        "voir exemple.frère",  # not "exemple.fr"
    ],
)
def test_no_ascii_piece_of_an_internationalised_name_is_a_link(body: str) -> None:
    """An ASCII run inside a word of accented Latin letters is not a domain of its own:
    tracking it would send the click to another site and leave "mü" in the message."""
    assert [body[start:end] for start, end in find_all(body)] == []


def test_links_touching_text_without_spaces_are_still_found() -> None:
    """Scripts written without spaces may touch a bare domain on either side."""
    body = "詳しくはexample.comへ。 ดูที่shop.co.thเลย, Ölçü: site.com.tr/ü"
    assert [body[start:end] for start, end in find_all(body)] == [
        "example.com",
        "shop.co.th",
        "site.com.tr/ü",
    ]
