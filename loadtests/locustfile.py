"""Traffic like a real SMS campaign's, for locust.

    make load                                  # headless, bounded, against `make run`
    .venv/bin/locust -f loadtests/locustfile.py  # the web UI on http://127.0.0.1:8089

Two kinds of users:

- Recipient (FastHttpUser): taps a short URL from the seeded campaign
  (loadtests/seed.py writes them to loadtests/results/campaign.json) without
  following the redirect, with a phone's User-Agent (iOS Safari, Android Chrome,
  in-app browsers). Some requests are preview fetchers doing HEAD with their own
  User-Agents, some are unknown tokens (404, or 429 past the scan limit) and some expired
  links (410).
- Operator (FastHttpUser, one of them): the SMS platform's pipeline, creating
  1,000-recipient link batches and rewriting 1,000-recipient messages through the
  API, and reading the campaign's statistics. Needs SHORTLINK_API_KEY.

The shape is a burst: most taps come in the first minutes after a send, then
they tail off. BurstShape starts at LOAD_PEAK_USERS recipients and decays
exponentially to a tenth of that by the end of LOAD_RUN_SECONDS, then stops the
test. LOAD_SHAPE=flat removes it, so -u/-r (or the web UI) decide.

Settings (environment): LOAD_CAMPAIGN_FILE, SHORTLINK_API_URL (default
http://127.0.0.1:8081), SHORTLINK_API_KEY, LOAD_PEAK_USERS (40), LOAD_RUN_SECONDS
(60), LOAD_SHAPE (burst|flat). The redirect host comes from the short URLs
themselves, so the same file drives a deployed domain.
"""

from __future__ import annotations

import os
import random
import string
import sys
from pathlib import Path
from urllib.parse import urlsplit

import orjson
from locust import LoadTestShape, between, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import StopUser

# `locust -f loadtests/locustfile.py` from anywhere: the project's root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from loadtests.shape import burst_users

CAMPAIGN_FILE = Path(
    os.environ.get(
        "LOAD_CAMPAIGN_FILE", Path(__file__).resolve().parent / "results" / "campaign.json"
    )
)
API_URL = os.environ.get("SHORTLINK_API_URL", "http://127.0.0.1:8081").rstrip("/")
API_KEY = os.environ.get("SHORTLINK_API_KEY", "")
PEAK_USERS = int(os.environ.get("LOAD_PEAK_USERS", "40"))
RUN_SECONDS = float(os.environ.get("LOAD_RUN_SECONDS", "60"))

# People: what phones send when someone taps a link in an SMS (weights in %).
PHONES = (
    (
        38,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    ),
    (
        34,
        "Mozilla/5.0 (Linux; Android 14; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/125.0.6422.113 Mobile Safari/537.36",
    ),
    (
        8,
        "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.6367.179 Mobile Safari/537.36",
    ),
    (
        6,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/465.0.0.37.108;FBBV/600000000]",
    ),
    (
        5,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 Instagram 330.0.0.40.92 (iPhone15,3; iOS 17_4)",
    ),
    (
        5,
        "Mozilla/5.0 (Linux; Android 12; SAMSUNG SM-A536B) AppleWebKit/537.36 (KHTML, like "
        "Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
    ),
    (
        4,
        "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    ),
)
PHONE_AGENTS = [agent for _, agent in PHONES]
PHONE_WEIGHTS = [weight for weight, _ in PHONES]
# Preview fetchers: messaging apps drawing a link's preview, with HEAD.
PREVIEWS = (
    "WhatsApp/2.24.12.78 A",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "TelegramBot (like TwitterBot)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
)
BASE62 = string.digits + string.ascii_letters


def _load_campaign() -> tuple[str, list[str], list[str]]:
    if not CAMPAIGN_FILE.exists():
        return "", [], []
    data = orjson.loads(CAMPAIGN_FILE.read_bytes())
    return data["campaign"], data["short_urls"], data["expired_urls"]


CAMPAIGN, SHORT_URLS, EXPIRED_URLS = _load_campaign()


def _origin(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return f"{parts.scheme}://{parts.netloc}"


def _absolute(url: str) -> str:
    """Short URLs made with https: false have no scheme; phones add https://."""
    return url if "://" in url else f"https://{url}"


class Recipient(FastHttpUser):
    """A person who got the SMS, tapping the link (or an app previewing it)."""

    host = _origin(SHORT_URLS[0]) if SHORT_URLS else "http://127.0.0.1:8080"
    wait_time = between(0.05, 0.5)
    weight = 1

    def on_start(self) -> None:
        if not SHORT_URLS:
            raise StopUser  # nothing seeded: run `python -m loadtests.seed` first

    def _get(
        self, url: str, name: str, expected: int | tuple[int, ...], *, method: str, agent: str
    ) -> None:
        with self.client.request(
            method,
            url,
            name=name,
            headers={"User-Agent": agent},
            allow_redirects=False,
            catch_response=True,
        ) as response:
            if response.status_code in (expected if isinstance(expected, tuple) else (expected,)):
                response.success()
            else:
                response.failure(f"expected {expected}, got {response.status_code}")

    @task(88)
    def tap(self) -> None:
        agent = random.choices(PHONE_AGENTS, PHONE_WEIGHTS)[0]
        self._get(_absolute(random.choice(SHORT_URLS)), "tap", 302, method="GET", agent=agent)

    @task(6)
    def preview(self) -> None:
        url = _absolute(random.choice(SHORT_URLS))
        self._get(url, "preview (HEAD)", 302, method="HEAD", agent=random.choice(PREVIEWS))

    @task(4)
    def unknown_token(self) -> None:
        token = "".join(random.choices(BASE62, k=7))
        # 429 once this address asked for SCAN_LIMIT_PER_MINUTE unknown tokens this minute.
        self._get(
            f"{self.host}/{token}", "unknown token", (404, 429), method="GET", agent=PHONE_AGENTS[0]
        )

    @task(2)
    def expired_link(self) -> None:
        if EXPIRED_URLS:
            url = _absolute(random.choice(EXPIRED_URLS))
            self._get(url, "expired link", 410, method="GET", agent=PHONE_AGENTS[1])


class Operator(FastHttpUser):
    """The SMS platform before a send: bulk links, rewritten messages, statistics."""

    host = API_URL
    fixed_count = 1
    wait_time = between(1, 3)
    batch = 1_000

    def on_start(self) -> None:
        if not API_KEY:
            raise StopUser  # the API needs SHORTLINK_API_KEY
        self.headers = {"Authorization": f"Bearer {API_KEY}"}

    def _phones(self) -> list[str]:
        start = random.randrange(10**7)
        return [f"+4479{start + n:08d}" for n in range(self.batch)]

    def _post(self, path: str, body: dict[str, object], name: str) -> None:
        with self.client.post(
            path, json=body, headers=self.headers, name=name, catch_response=True
        ) as response:
            if response.status_code == 201:
                response.success()
            else:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")

    @task(3)
    def create_links(self) -> None:
        body = {
            "url": "https://shop.example.com/next-week",
            "client_identifier": "load-operator",
            "recipients": [
                {"phone_number": phone, "client_ref": f"op-{phone}"} for phone in self._phones()
            ],
        }
        self._post("/v1/links", body, f"POST /v1/links ({self.batch:,} recipients)")

    @task(3)
    def rewrite_messages(self) -> None:
        body = {
            "to": self._phones(),
            "mode": "track",
            "client_identifier": "load-operator",
            "body": 'Our sale starts now: #track("https://shop.example.com/sale") Reply STOP '
            "to opt out",
        }
        self._post("/v1/messages", body, f"POST /v1/messages ({self.batch:,} recipients)")

    @task(1)
    def campaign_stats(self) -> None:
        if CAMPAIGN:
            self.client.get(
                f"/v1/campaigns/{CAMPAIGN}/stats",
                headers=self.headers,
                name="GET /v1/campaigns/{id}/stats",
            )


if os.environ.get("LOAD_SHAPE", "burst") == "burst":

    class BurstShape(LoadTestShape):
        """Many taps right after the send, fewer and fewer after."""

        def tick(self) -> tuple[int, float] | None:
            elapsed = self.get_run_time()
            if elapsed >= RUN_SECONDS:
                return None
            # + 1: the operator, a fixed_count user, is part of the total.
            return burst_users(elapsed, PEAK_USERS, RUN_SECONDS) + 1, float(PEAK_USERS)
