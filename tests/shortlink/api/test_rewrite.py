"""Where tracked links go in a message body, mode by mode."""

from __future__ import annotations

import itertools
import re
import time

import pytest

from shortlink.api.rewrite import directives, plan, plan_template
from shortlink.exceptions import NothingToTrack


def fill(body: str, mode: str) -> tuple[str, tuple[str, ...]]:
    cut = plan(body, mode)
    return cut.render([f"<L{i}>" for i in range(len(cut.targets))]), cut.targets


@pytest.mark.parametrize(
    ("body", "expected", "targets"),
    [
        ('Visit #track("https://a.example/x") now', "Visit <L0> now", ("https://a.example/x",)),
        ('Hi #track(\\"https://a.example/x\\")!', "Hi <L0>!", ("https://a.example/x",)),
        (
            '#track("https://a.example/1") or #track("https://b.example/2")',
            "<L0> or <L1>",
            ("https://a.example/1", "https://b.example/2"),
        ),
        ("Ünïcode ✓ #track('https://a.example/ü') ✓", "Ünïcode ✓ <L0> ✓", ("https://a.example/ü",)),
        ('#track( "www.a.example" )', "<L0>", ("https://www.a.example",)),
    ],
)
def test_track_directives(body: str, expected: str, targets: tuple[str, ...]) -> None:
    """Each #track("URL") directive, escaped quotes included, becomes a link."""
    assert fill(body, "track") == (expected, targets)


@pytest.mark.parametrize(
    ("body", "expected", "target"),
    [
        (
            "test link tracking https://www.xoxzo.com/en/",
            "test link tracking <L0>",
            "https://www.xoxzo.com/en/",
        ),
        (
            "https://a.example/1 first, https://b.example/2 second",
            "<L0> first, https://b.example/2 second",
            "https://a.example/1",
        ),
        ("Offer at https://a.example/x. Hurry", "Offer at <L0>. Hurry", "https://a.example/x"),
        ("See (https://a.example/x), ok", "", None),
        ("Go to www.shop.example!", "Go to <L0>!", "https://www.shop.example"),
        ("test link tracking xoxzo.com/en/", "test link tracking <L0>", "https://xoxzo.com/en/"),
        ("Visit www.example.co.uk, today", "Visit <L0>, today", "https://www.example.co.uk"),
        (
            "See readme.md e.g. 3.5 or example.com.",
            "See readme.md e.g. 3.5 or <L0>.",
            "https://example.com",
        ),
        (
            "(see https://en.wikipedia.org/wiki/Foo_(bar))",
            "(see <L0>)",
            "https://en.wikipedia.org/wiki/Foo_(bar)",
        ),
        ("詳細は https://a.example/x。", "詳細は <L0>。", "https://a.example/x"),
        ("Read readme.md, file.txt and v1.2 notes", "", None),
        ("Mail user@example.com today", "", None),
    ],
)
def test_first_url_between_spaces(body: str, expected: str, target: str | None) -> None:
    """The first URL or domain name between ASCII spaces is replaced; punctuation stays."""
    if target is None:
        with pytest.raises(NothingToTrack):
            plan(body, "first")
        return
    assert fill(body, "first") == (expected, (target,))


def test_first_needs_ascii_spaces() -> None:
    """A URL glued to text or separated by a newline is not 'between spaces'."""
    with pytest.raises(NothingToTrack):
        plan("Visit:https://a.example/x\nnow", "first")


def test_last_url_only() -> None:
    """The seed's school example: only the last URL is replaced, its full stop kept."""
    body = (
        "Dear parents, please reserve your seats at https://www.yourkidschoolexample.com or sign "
        "up, https://www.yourkidschoolexample.com/signup/. Regards YourKidsSchoolExample School"
    )
    text, targets = fill(body, "last")
    assert targets == ("https://www.yourkidschoolexample.com/signup/",)
    assert text.endswith("sign up, <L0>. Regards YourKidsSchoolExample School")
    assert "at https://www.yourkidschoolexample.com or" in text


def test_last_url_glued_to_text() -> None:
    """Unlike first, last finds a URL anywhere (after a colon, before a newline)."""
    assert fill("Visit:https://a.example/x\nnow", "last") == (
        "Visit:<L0>\nnow",
        ("https://a.example/x",),
    )


def test_nothing_to_track() -> None:
    """A body without anything to track in the mode is refused."""
    for mode in ("track", "first", "last"):
        with pytest.raises(NothingToTrack):
            plan("Hello, no links here.", mode)


def test_template_values_that_are_urls_become_links() -> None:
    """DLT: only {#var#} values that are URLs are replaced; the fixed text never changes."""
    template = "Dear {#var#}, your coupon {#var#} expires soon: {#var#} -Team"
    cut = plan_template(template, ["Asha", "SAVE10", "https://shop.example/c?id=9."])
    assert cut.targets == ("https://shop.example/c?id=9",)
    assert cut.render(["<L0>"]) == "Dear Asha, your coupon SAVE10 expires soon: <L0>. -Team"


def test_template_slot_count_must_match() -> None:
    """As many values as slots; no URL value at all is nothing to track."""
    with pytest.raises(ValueError, match=r"2 .*slots but 1 values"):
        plan_template("{#var#} {#var#}", ["a"])
    with pytest.raises(NothingToTrack):
        plan_template("Hi {#var#}", ["Asha"])


def test_last_finds_domain_names_too() -> None:
    """last mode takes a bare domain as a link as well, never an address or a file name."""
    assert fill("Old: https://a.example/1, new: shop.example.com/new. Mail me@b.com", "last") == (
        "Old: https://a.example/1, new: <L0>. Mail me@b.com",
        ("https://shop.example.com/new",),
    )
    with pytest.raises(NothingToTrack):
        plan("Open readme.md or setup.py, e.g. v1.2", "last")


def test_domain_names_in_track_directives_and_template_values() -> None:
    """A bare domain in #track() or as a template value is tracked as https:// + it."""
    assert fill('Go #track("xoxzo.com/en/")', "track") == ("Go <L0>", ("https://xoxzo.com/en/",))
    cut = plan_template("File {#var#} at {#var#}", ["readme.md", "example.com/f."])
    assert cut.targets == ("https://example.com/f",)
    assert cut.render(["<L0>"]) == "File readme.md at <L0>."


@pytest.mark.parametrize(
    ("body", "expected", "target"),
    [
        ("Sale! https://a.example/x\nReply STOP", "Sale! <L0>\nReply STOP", "https://a.example/x"),
        ("Sale! shop.example.com.\r\nBye", "Sale! <L0>.\r\nBye", "https://shop.example.com"),
        ("Go https://a.example/x\tnow", "Go <L0>\tnow", "https://a.example/x"),
        ('Go https://a.example/x"now', 'Go <L0>"now', "https://a.example/x"),
        ("Go https://a.example/x<br>", "Go <L0><br>", "https://a.example/x"),
    ],
)
def test_first_link_ends_at_whitespace_inside_its_word(
    body: str, expected: str, target: str
) -> None:
    """A link ends at whitespace, <, > and " in first mode too (docs/api.md, "Where a link
    ends"): a newline after the URL is not part of the target (which 422'd the message)."""
    assert fill(body, "first") == (expected, (target,))


_ONE_EXPRESSION = re.compile(r'#track\(\s*(\\?["\'])(.*?)\1\s*\)', re.DOTALL)


def test_directives_are_found_as_by_one_regular_expression() -> None:
    """The same directives as the one expression would find, on every mix of the pieces."""
    pieces = ["#track(", '"', "'", "\\", ")", " ", "x", "\n"]
    for parts in itertools.product(pieces, repeat=6):
        body = "".join(parts) + '#track("a") ' + "".join(reversed(parts))
        expected = [(m.start(), m.end(), m.group(2)) for m in _ONE_EXPRESSION.finditer(body)]
        assert list(directives(body)) == expected, body


@pytest.mark.parametrize("opening", ['#track("', "#track('", '#track(\\"', "#track( '"])
def test_unclosed_directives_take_linear_time(opening: str) -> None:
    """Directives that never close are read at once: one regular expression read to the
    end of the body from each of them (50-80 ms at MAX_BODY, 10,000; 5 s at 100,000)."""
    body = opening * (100_000 // len(opening))
    started = time.perf_counter()
    with pytest.raises(NothingToTrack):
        plan(body, "track")
    assert time.perf_counter() - started < 0.2
