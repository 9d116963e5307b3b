"""The rule language: checking what a client sends (hostile input too), matching a request,
choosing variants."""

from __future__ import annotations

import os
import random
import tracemalloc
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from shortlink import rules
from shortlink.exceptions import InvalidInput
from tests.clicks import IPHONE

ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Mobile Safari/537.36"
)
ANDROID_TABLET = "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 Chrome/120.0 Safari"
IPAD = "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari"
MAC = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Version/17.0 Safari"
LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
WHATSAPP = "WhatsApp/2.23.20.0 A"
SPAIN = "88.0.0.1"  # RIR data: Spain (Telefonica)


def check(value: Any) -> list[dict[str, Any]]:
    return rules.check_rules(value, lambda url: url if url.startswith("https://") else _bad())


def _bad() -> str:
    raise InvalidInput("must be an absolute http(s) URL")


def compiled(value: Any) -> rules.Rules:
    text = rules.canonical(check(value))
    assert text is not None
    return rules.compiled(text)


def choose(value: Any, agent: str | None = IPHONE, **request: Any) -> int | None:
    return rules.choose(
        compiled(value),
        agent,
        request.get("ip", "203.0.113.7"),
        request.get("language"),
        request.get("method", "GET"),
        request.get("now", datetime(2026, 12, 6, tzinfo=UTC).timestamp()),
    )


APP_STORES = [
    {"when": {"os": "iOS"}, "url": "https://apps.apple.com/app/id1"},
    {"when": {"os": ["Android"]}, "url": "https://play.google.com/store/apps/details?id=x"},
]


def test_rules_are_normalised_to_one_canonical_text() -> None:
    """Single values become lists, codes change case, conditions take one order."""
    checked = check(
        [{"url": "https://e.com/es", "when": {"language": "ES", "country": ["es", "MX", "ES"]}}]
    )
    assert checked == [
        {"when": {"country": ["ES", "MX"], "language": ["es"]}, "url": "https://e.com/es"}
    ]
    assert rules.canonical(checked) == orjson.dumps(checked).decode()
    assert rules.canonical([]) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("rules", "must be an array"),
        ([{"when": {"os": "iOS"}, "url": "https://e.com"}] * 21, "at most 20"),
        ([1], "[0]: must be an object"),
        ([{"when": {"os": "iOS"}}], "[0].url: is required"),
        ([{"when": {"os": "iOS"}, "url": "ftp://e.com"}], "[0].url: must be an absolute"),
        ([{"when": {"os": "iOS"}, "url": "https://e.com/" + "a" * 3000}], "at most 2048"),
        ([{"when": {}, "url": "https://e.com"}], "at least one condition"),
        ([{"when": {"os": "BeOS"}, "url": "https://e.com"}], "is not one of"),
        ([{"when": {"device_type": "watch"}, "url": "https://e.com"}], "is not one of"),
        ([{"when": {"country": "ESP"}, "url": "https://e.com"}], "alpha-2"),
        ([{"when": {"country": "1A"}, "url": "https://e.com"}], "alpha-2"),
        ([{"when": {"language": "español"}, "url": "https://e.com"}], "language subtag"),
        ([{"when": {"language": ["e"]}, "url": "https://e.com"}], "language subtag"),
        ([{"when": {"country": ["ES"] * 51}, "url": "https://e.com"}], "1 to 50"),
        ([{"when": {"country": []}, "url": "https://e.com"}], "1 to 50"),
        ([{"when": {"country": [["ES"]]}, "url": "https://e.com"}], "short string"),
        ([{"when": {"before": "tomorrow"}, "url": "https://e.com"}], "RFC 3339"),
        ([{"when": {"before": "2026-12-06T10:00:00"}, "url": "https://e.com"}], "RFC 3339"),
        ([{"when": {"after": "2026-02-30T10:00:00Z"}, "url": "https://e.com"}], "RFC 3339"),
        ([{"when": {"after": 1700000000}, "url": "https://e.com"}], "RFC 3339"),
        ([{"when": {"planet": "Mars"}, "url": "https://e.com"}], "is not a condition"),
        ([{"when": {"os": "iOS"}, "url": "https://e.com", "x": 1}], "is not a known field"),
    ],
)
def test_bad_rules_are_refused_with_where_and_why(value: Any, message: str) -> None:
    """Each kind of bad rule is InvalidInput whose message names the place and the problem."""
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        check(value)


def test_hostile_rules_are_refused_not_crashed_on() -> None:
    """Random bytes decoded as JSON, deep nesting and huge strings give InvalidInput only."""
    randomness = random.Random(26)
    nested: Any = "iOS"
    for _ in range(500):
        nested = [nested]
    samples: list[Any] = [
        [{"when": {"os": nested}, "url": "https://e.com"}],
        [{"when": {"country": "E" * 1_000_000}, "url": "https://e.com"}],
        [{"when": {"x" * 100_000: 1}, "url": "https://e.com"}],
        [{"when": {"os": "iOS\x00"}, "url": "https://e.com"}],
        [{"when": {"language": "\ud800"}, "url": "https://e.com"}],
    ]
    for _ in range(200):
        blob = os.urandom(randomness.randrange(1, 64)).decode("latin-1")
        samples.append([{"when": {"os": blob, "country": blob}, "url": blob}])
        samples.append(blob)
    for sample in samples:
        with pytest.raises(InvalidInput) as caught:
            check(sample)
        assert len(str(caught.value)) < 300


def test_the_first_matching_rule_wins_by_os_and_device() -> None:
    """iPhone and iPad are iOS, Android phones and tablets Android; the rest fall through."""
    assert choose(APP_STORES, IPHONE) == 0
    assert choose(APP_STORES, IPAD) == 0
    assert choose(APP_STORES, ANDROID) == 1
    assert choose(APP_STORES, WINDOWS) is None
    devices = [
        {"when": {"device_type": "tablet"}, "url": "https://e.com/t"},
        {"when": {"device_type": "desktop", "os": ["macOS", "Linux"]}, "url": "https://e.com/d"},
        {"when": {"os": "other"}, "url": "https://e.com/o"},
    ]
    assert choose(devices, IPAD) == 0
    assert choose(devices, ANDROID_TABLET) == 0
    assert choose(devices, MAC) == 1
    assert choose(devices, LINUX) == 1
    assert choose(devices, WINDOWS) is None
    assert choose(devices, "Nokia3310/1.0") == 2


def test_country_and_language_match_from_the_request() -> None:
    """The client address's country (offline data) and Accept-Language's preferred language."""
    spanish = [{"when": {"country": ["ES", "MX"], "language": "es"}, "url": "https://e.com/es"}]
    assert choose(spanish, ip=SPAIN, language="es-ES,es;q=0.9,en;q=0.5") == 0
    assert choose(spanish, ip=SPAIN, language="en-GB,es;q=0.8") is None
    assert choose(spanish, ip="127.0.0.1", language="es") is None
    assert choose(spanish, ip="not an address", language="es") is None
    assert choose(spanish, ip=SPAIN, language="fr;q=0.2,es;q=0.9") == 0


def test_before_and_after_bound_the_time_of_the_tap() -> None:
    """before: taps earlier than the instant; after: taps at or after it."""
    window = [
        {"when": {"before": "2026-12-24T00:00:00+01:00"}, "url": "https://e.com/early"},
        {"when": {"after": "2026-12-24T00:00:00+01:00"}, "url": "https://e.com/late"},
    ]
    moment = datetime(2026, 12, 23, 23, 0, tzinfo=UTC).timestamp()  # 00:00 +01:00
    assert choose(window, now=moment - 1) == 0
    assert choose(window, now=moment) == 1


def test_bots_previews_head_and_no_agent_get_the_links_url() -> None:
    """A preview fetcher, a crawler, HEAD or no User-Agent never takes a rule."""
    catch_all = [{"when": {"os": ["iOS", "Android", "other"]}, "url": "https://e.com/x"}]
    assert choose(catch_all, IPHONE) == 0
    assert choose(catch_all, WHATSAPP) is None
    assert choose(catch_all, "Googlebot/2.1 (+http://www.google.com/bot.html)") is None
    assert choose(catch_all, IPHONE, method="HEAD") is None
    assert choose(catch_all, None) is None
    assert choose(catch_all, "") is None


def test_hostile_request_headers_are_bounded() -> None:
    """A huge or garbled User-Agent and Accept-Language are read only in part and never raise."""
    spanish = [{"when": {"language": "es"}, "url": "https://e.com/es"}]
    assert choose(spanish, "A" * 100_000, language="es," * 100_000) == 0
    assert choose(spanish, "\ud800\x00", language="q=;;,,;q=abc,\x00") is None
    assert rules.language_of("x" * 10_000) is None


def test_distinct_huge_accept_languages_keep_the_cache_small() -> None:
    """Thousands of distinct 8 KiB Accept-Language headers (aiohttp's limit) hold only the
    part that is read in the per-header cache, not 8 KiB each (tens of MiB a worker)."""
    spanish = [{"when": {"language": "es"}, "url": "https://e.com/es"}]
    rules.language_of.cache_clear()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(4096):
            header = f"es;q=0.{index % 9 + 1}," + "x" * 8000 + str(index)
            assert choose(spanish, language=header) == 0
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        rules.language_of.cache_clear()
    assert held < 4 * 1024 * 1024


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "non-empty array"),
        ({"url": "https://e.com"}, "non-empty array"),
        ([{"url": "https://e.com", "weight": 0}], "weight: must be an integer"),
        ([{"url": "https://e.com", "weight": -5}], "weight: must be an integer"),
        ([{"url": "https://e.com", "weight": 1.5}], "weight: must be an integer"),
        ([{"url": "https://e.com", "weight": True}], "weight: must be an integer"),
        ([{"url": "https://e.com", "weight": "70"}], "weight: must be an integer"),
        ([{"url": "https://e.com", "weight": 10**7}], "weight: must be an integer"),
        ([{"url": "https://e.com"}], "weight: must be an integer"),
        ([{"url": "ftp://e.com", "weight": 1}], "url: must be an absolute"),
        ([{"url": "https://e.com", "weight": 1}] * 21, "at most 20"),
        ([{"url": "https://e.com", "weight": 1, "extra": 1}], "url and weight only"),
        (["https://e.com"], "url and weight only"),
    ],
)
def test_bad_variants_are_refused(value: Any, message: str) -> None:
    """Bad weights, bad URLs, too many and malformed variants are InvalidInput."""
    with pytest.raises(InvalidInput, match=message):
        rules.check_variants(value, lambda url: url if url.startswith("https://") else _bad())


def test_variants_are_drawn_by_weight() -> None:
    """Over many links each variant's share is near its weight's share."""
    drawn = Counter(rules.choose_variant([70, 30]) for _ in range(20_000))
    assert set(drawn) == {0, 1}
    assert 0.67 < drawn[0] / 20_000 < 0.73
    assert Counter(rules.choose_variant([1]) for _ in range(100)) == {0: 100}
