"""Preview fetchers, crawlers and HTTP libraries told by their User-Agent: our rules first,
then the maintained crawler-user-agents list."""

from __future__ import annotations

import pytest

from shortlink import previews
from tests.clicks import IPHONE


def test_rules_are_lower_case_substrings() -> None:
    """The rule table is easy to extend: lower-case needles, matched case-insensitively."""
    assert all(needle == needle.lower() for needle, _ in previews.RULES)
    assert previews.match("Mozilla/5.0 WHATSAPP/2.0") == "WhatsApp preview"
    assert previews.match(IPHONE) is None


@pytest.mark.parametrize(("needle", "name"), previews.RULES)
def test_every_rule_is_reached_by_its_own_needle(needle: str, name: str) -> None:
    """Each needle, in any case inside a longer User-Agent, is reported under its own name:
    no earlier rule hides a later one."""
    assert previews.match(f"Mozilla/5.0 ({needle.upper()} 1.0)") == name


@pytest.mark.parametrize(
    ("user_agent", "name"),
    [
        ("WhatsApp/2.23.20.0 A", "WhatsApp preview"),
        ("TelegramBot (like TwitterBot)", "Telegram preview"),
        ("curl/8.4.0", "curl"),
        ("python-requests/2.31.0", "python-requests"),
        ("facebookexternalhit/1.1 Facebot Twitterbot/1.0", "Facebook preview"),
    ],
)
def test_the_first_matching_rule_wins(user_agent: str, name: str) -> None:
    """A User-Agent that several rules match is reported under the first of them."""
    assert previews.match(user_agent) == name


@pytest.mark.parametrize(
    "user_agent",
    [
        "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 Mobile Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Snapchat/12.80.0.33 (iPhone)",
        "",
    ],
)
def test_no_rule_matches_a_person(user_agent: str) -> None:
    """A phone named like a bot, Snapchat's in-app browser, an empty agent: no rule of ours."""
    assert previews.match(user_agent) is None


def test_the_list_is_loaded_whole() -> None:
    """Every pattern of the packaged list is used (RE2, or re for any RE2 cannot read)."""
    assert previews.LISTED_PATTERNS > 1000
    assert previews.listed("Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)")
    assert previews.listed("\ud800 broken") is None


def test_the_list_names_the_crawler_by_the_text_it_matched() -> None:
    """listed() answers the text of the User-Agent the list's pattern matched."""
    assert previews.listed("Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)") == (
        "GPTBot"
    )
    assert previews.listed(IPHONE) is None
