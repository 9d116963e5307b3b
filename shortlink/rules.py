"""Smart destinations: rules by device, place, language and time, and A/B variants.

A link request may give `rules`, an ordered list of `{"when": {...}, "url": "..."}`.
`when` holds one or more of:

    os           "iOS", "Android", "Windows", "macOS", "Linux", "other" (one or a list)
    device_type  "mobile", "tablet", "desktop" (one or a list)
    country      ISO 3166-1 alpha-2 codes, of the client address (offline data,
                 shortlink.geoip), e.g. "ES" or ["ES", "MX"]
    language     primary language subtags, of the most preferred language in
                 Accept-Language, e.g. "es" or ["es", "ca"]
    before       an RFC 3339 instant with its offset: matches taps before it
    after        an RFC 3339 instant with its offset: matches taps at or after it

Every key given must match; the first matching rule wins, else the link's `url`.
Bots and link previews (shortlink.previews, HEAD requests, no User-Agent) always get
`url`, so a preview shows the page the sender meant. At most MAX_RULES rules, each URL
checked like `url` (shortlink.validation.target_url), every list and text bounded.

Rules are stored as canonical compact JSON (`canonical`), shared by the links of a
request, and compiled once per distinct text in the redirect server (`compiled`).
Matching reads what the request carries: the User-Agent by a few substring checks
(`agent_of`, cached per distinct agent), the client address through shortlink.geoip
(cached per address), Accept-Language (cached per distinct header).

`variants` (instead of `url`): `[{"url": ..., "weight": 70}, {"url": ..., "weight": 30}]`;
each link gets one at creation (`choose_variant`, a CSPRNG draw by weight), stored.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from shortlink import geoip, previews
from shortlink.exceptions import InvalidInput
from shortlink.redirect.response import encodable

MAX_RULES = 20
# A rule's or variant's URL, as given and once percent-encoded: a click event's
# destination holds this much (shortlink.clickevent.MAX_DESTINATION), and 20 rules
# stay under the links.rules column's 65,536 characters.
MAX_URL = 2048
MAX_VARIANTS = 20
MAX_WEIGHT = 1_000_000
MAX_VALUES = 50  # values of one condition (countries, languages)
MAX_INSTANT = 64  # characters of a before/after instant
MAX_ACCEPT_LANGUAGE = 256  # characters of Accept-Language read
_CACHE = 4096
OS_NAMES = ("iOS", "Android", "Windows", "macOS", "Linux", "other")
DEVICE_TYPES = ("mobile", "tablet", "desktop")
CONDITIONS = ("os", "device_type", "country", "language", "before", "after")
# The OpenAPI document states these word for word (tests/shortlink/api/test_openapi.py).
COUNTRY_PATTERN = r"^[A-Za-z]{2}$"
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}$"
# RFC 3339 with its offset, years from 1970, and only days each month has (no February
# 29th: the pattern cannot tell leap years; use 02-28T23:59:59 or 03-01): whatever the
# document's pattern allows, the code reads.
INSTANT_PATTERN = (
    r"^(?:19[7-9][0-9]|[2-9][0-9]{3})-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
_COUNTRY = re.compile(COUNTRY_PATTERN)
_LANGUAGE = re.compile(LANGUAGE_PATTERN)
_INSTANT = re.compile(INSTANT_PATTERN, re.ASCII)


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule: each condition None (any) or what it accepts."""

    url: str
    location: bytes | None  # url as Location bytes (None: not latin-1, see response)
    os: frozenset[str] | None
    device_type: frozenset[str] | None
    country: frozenset[str] | None
    language: frozenset[str] | None
    before: float | None  # Unix seconds
    after: float | None


@dataclass(frozen=True, slots=True)
class Rules:
    """A request's rules, compiled, with what matching them needs to read."""

    rules: tuple[Rule, ...]
    needs_agent: bool
    needs_country: bool
    needs_language: bool


# -- checking what a client sends ------------------------------------------------


def check_rules(value: Any, check_url: Callable[[str], str]) -> list[dict[str, Any]]:
    """The rules of a request, normalised; InvalidInput naming the first problem."""
    if not isinstance(value, list):
        raise InvalidInput("must be an array of {when, url} objects")
    if len(value) > MAX_RULES:
        raise InvalidInput(f"must have at most {MAX_RULES} rules")
    return [_check_rule(index, rule, check_url) for index, rule in enumerate(value)]


def _check_rule(index: int, rule: Any, check_url: Callable[[str], str]) -> dict[str, Any]:
    where = f"[{index}]"
    if not isinstance(rule, dict):
        raise InvalidInput(f"{where}: must be an object with when and url")
    unknown = set(rule) - {"when", "url"}
    if unknown:
        raise InvalidInput(f"{where}.{sorted(unknown)[0][:40]}: is not a known field")
    url = rule.get("url")
    if not isinstance(url, str):
        raise InvalidInput(f"{where}.url: is required, a string")
    if len(url) > MAX_URL:
        raise InvalidInput(f"{where}.url: must be at most 2048 characters")
    try:
        url = check_url(url)
    except ValueError as exc:
        raise InvalidInput(f"{where}.url: {exc}") from None
    if len(url) > MAX_URL:  # percent-encoding makes a non-ASCII URL up to 6x longer
        raise InvalidInput(f"{where}.url: must be at most {MAX_URL} characters once encoded")
    when = rule.get("when")
    if not isinstance(when, dict) or not when:
        raise InvalidInput(f"{where}.when: must be an object with at least one condition")
    checked: dict[str, Any] = {}
    for key, condition in when.items():
        if key not in CONDITIONS:
            raise InvalidInput(
                f"{where}.when.{key[:40]}: is not a condition ({', '.join(CONDITIONS)})"
            )
        checked[key] = _check_condition(f"{where}.when.{key}", key, condition)
    # Canonical order: the same rules give the same text, so links share their group.
    return {"when": {key: checked[key] for key in CONDITIONS if key in checked}, "url": url}


def _check_condition(where: str, key: str, value: Any) -> Any:
    if key in ("before", "after"):
        if not isinstance(value, str) or len(value) > MAX_INSTANT or not _INSTANT.fullmatch(value):
            raise InvalidInput(
                f"{where}: must be an RFC 3339 instant with its offset, e.g. 2026-12-24T00:00:00Z"
            )
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).isoformat()
        except ValueError:
            raise InvalidInput(f"{where}: is not a valid instant") from None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or len(values) > MAX_VALUES:
        raise InvalidInput(f"{where}: must be a string or 1 to {MAX_VALUES} strings")
    out: list[str] = []
    for item in values:
        if not isinstance(item, str) or len(item) > 16:
            raise InvalidInput(f"{where}: each value must be a short string")
        if key == "os" and item not in OS_NAMES:
            raise InvalidInput(f"{where}: {item!r} is not one of {', '.join(OS_NAMES)}")
        if key == "device_type" and item not in DEVICE_TYPES:
            raise InvalidInput(f"{where}: {item!r} is not one of {', '.join(DEVICE_TYPES)}")
        if key == "country":
            if not _COUNTRY.fullmatch(item):  # before upper(): "ß".upper() is "SS"
                raise InvalidInput(f"{where}: {item!r} is not an ISO 3166-1 alpha-2 code")
            item = item.upper()
        if key == "language":
            if not _LANGUAGE.fullmatch(item):
                raise InvalidInput(f"{where}: {item!r} is not a primary language subtag")
            item = item.lower()
        if item not in out:
            out.append(item)
    return out


def canonical(rules: Sequence[dict[str, Any]]) -> str | None:
    """The stored text of checked rules (None: no rules)."""
    return orjson.dumps(list(rules)).decode() if rules else None


def check_variants(value: Any, check_url: Callable[[str], str]) -> list[tuple[str, int]]:
    """(url, weight) of each variant; InvalidInput naming the first problem."""
    if not isinstance(value, list) or not value:
        raise InvalidInput("must be a non-empty array of {url, weight} objects")
    if len(value) > MAX_VARIANTS:
        raise InvalidInput(f"must have at most {MAX_VARIANTS} variants")
    variants = []
    for index, variant in enumerate(value):
        where = f"[{index}]"
        if not isinstance(variant, dict) or set(variant) - {"url", "weight"}:
            raise InvalidInput(f"{where}: must be an object with url and weight only")
        url, weight = variant.get("url"), variant.get("weight")
        if not isinstance(url, str) or len(url) > MAX_URL:
            raise InvalidInput(f"{where}.url: is required, a string of at most 2048 characters")
        try:
            url = check_url(url)
        except ValueError as exc:
            raise InvalidInput(f"{where}.url: {exc}") from None
        if len(url) > MAX_URL:  # as a rule's: what a click event's destination holds
            raise InvalidInput(f"{where}.url: must be at most {MAX_URL} characters once encoded")
        if type(weight) is float and weight.is_integer():  # 70.0 is JSON's integer 70
            weight = int(weight)
        if type(weight) is not int or not 1 <= weight <= MAX_WEIGHT:
            raise InvalidInput(f"{where}.weight: must be an integer from 1 to {MAX_WEIGHT:,}")
        variants.append((url, weight))
    return variants


def choose_variant(weights: Sequence[int]) -> int:
    """A variant's index drawn by weight (a CSPRNG: no recipient can predict another's)."""
    point = secrets.randbelow(sum(weights))
    for index, weight in enumerate(weights):
        point -= weight
        if point < 0:
            return index
    return len(weights) - 1  # pragma: no cover - the draw is below the sum


# -- matching in the redirect server ---------------------------------------------


@functools.lru_cache(maxsize=256)
def compiled(text: str) -> Rules:
    """Stored rules (`canonical`'s text), compiled for matching (once per distinct text)."""
    compiled_rules = []
    for rule in orjson.loads(text):
        when = rule["when"]

        def values(key: str, when: dict[str, Any] = when) -> frozenset[str] | None:
            return frozenset(when[key]) if key in when else None

        def instant(key: str, when: dict[str, Any] = when) -> float | None:
            return datetime.fromisoformat(when[key]).timestamp() if key in when else None

        compiled_rules.append(
            Rule(
                rule["url"],
                encodable(rule["url"]),
                values("os"),
                values("device_type"),
                values("country"),
                values("language"),
                instant("before"),
                instant("after"),
            )
        )
    return Rules(
        tuple(compiled_rules),
        any(r.os is not None or r.device_type is not None for r in compiled_rules),
        any(r.country is not None for r in compiled_rules),
        any(r.language is not None for r in compiled_rules),
    )


@functools.lru_cache(maxsize=_CACHE)
def agent_of(user_agent: str) -> tuple[str, str | None, bool]:
    """(os, device type or None, robot) of a User-Agent by substring checks (microseconds)."""
    robot = previews.match(user_agent) is not None or previews.listed(user_agent) is not None
    if "iPhone" in user_agent or "iPod" in user_agent:
        return "iOS", "mobile", robot
    if "iPad" in user_agent:
        return "iOS", "tablet", robot
    if "Android" in user_agent:
        return "Android", "mobile" if "Mobile" in user_agent else "tablet", robot
    if "Windows Phone" in user_agent:
        return "other", "mobile", robot
    if "Windows" in user_agent:
        return "Windows", "desktop", robot
    if "Macintosh" in user_agent or "Mac OS X" in user_agent:
        return "macOS", "desktop", robot
    if "Linux" in user_agent or "X11" in user_agent:
        return "Linux", "desktop", robot
    return "other", "mobile" if "Mobile" in user_agent else None, robot


@functools.lru_cache(maxsize=_CACHE)
def language_of(accept_language: str) -> str | None:
    """The primary subtag of the most preferred language of an Accept-Language header."""
    best, best_q = None, 0.0
    for part in accept_language[:MAX_ACCEPT_LANGUAGE].split(",")[:16]:
        tag, _, params = part.partition(";")
        primary = tag.strip().split("-", 1)[0]
        if not _LANGUAGE.fullmatch(primary):
            continue
        primary = primary.lower()
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:7])
            except ValueError:
                continue
        if q > best_q:
            best, best_q = primary, q
    return best


def choose(
    rules: Rules,
    user_agent: str | None,
    client_ip: str | None,
    accept_language: str | None,
    method: str,
    now: float,
) -> int | None:
    """The index of the first rule the request matches; None: the link's url (robots too)."""
    if method == "HEAD" or not user_agent:
        return None
    os, device, robot = agent_of(user_agent[:1024])
    if robot:
        return None
    country = (
        geoip.PACKAGED.locate(client_ip[:64] if client_ip else None).country
        if rules.needs_country
        else None
    )
    # Cut before the cache: its keys are what it holds (4096 headers of up to 8 KiB each).
    language = (
        language_of(accept_language[:MAX_ACCEPT_LANGUAGE])
        if rules.needs_language and accept_language
        else None
    )
    for index, rule in enumerate(rules.rules):
        if (
            (rule.os is None or os in rule.os)
            and (rule.device_type is None or device in rule.device_type)
            and (rule.country is None or country in rule.country)
            and (rule.language is None or language in rule.language)
            and (rule.before is None or now < rule.before)
            and (rule.after is None or now >= rule.after)
        ):
            return index
    return None
