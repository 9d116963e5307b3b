"""Seed a load test: a campaign created through the API, its short URLs written to a file.

    python -m loadtests.seed --api-url http://127.0.0.1:8081 --recipients 10000

The API key comes from SHORTLINK_API_KEY. The campaign's links are made with
one bulk POST /v1/links per 10,000 recipients, as an SMS platform would before
a send; a few more are made and then expired at once (PATCH expires_in_days 0)
so the load includes taps on expired links. The file (default
loadtests/results/campaign.json) holds the campaign's name, its short URLs and
the expired ones; the locustfile reads it. It holds no key.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

RESULTS = Path(__file__).resolve().parent / "results"
CAMPAIGN_FILE = RESULTS / "campaign.json"
TARGET = "https://shop.example.com/autumn-sale?utm_source=sms"
CHUNK = 10_000


class SeedError(Exception):
    """The API refused or could not be reached."""


@dataclass(frozen=True)
class Campaign:
    name: str
    short_urls: list[str]
    expired_urls: list[str]

    def dump(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(
            orjson.dumps(
                {
                    "campaign": self.name,
                    "short_urls": self.short_urls,
                    "expired_urls": self.expired_urls,
                },
                option=orjson.OPT_INDENT_2,
            )
        )


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, body: dict[str, Any] | None
) -> Any:
    async with session.request(method, url, json=body) as response:
        payload = await response.read()
        if response.status >= 300:
            raise SeedError(f"{method} {url} answered {response.status}: {payload[:300]!r}")
        return orjson.loads(payload) if payload else None


async def create_campaign(
    api_url: str,
    api_key: str,
    recipients: int,
    *,
    expired: int = 100,
    name: str | None = None,
    endpoint_url: str | None = None,
    https: bool = True,
) -> Campaign:
    """Create `recipients` links (one per phone) and `expired` expired ones; optionally
    point the account's endpoint at `endpoint_url` first."""
    name = name or f"load-{time.strftime('%Y%m%d-%H%M%S')}"
    headers = {"Authorization": f"Bearer {api_key}"}
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        if endpoint_url is not None:
            await _call(
                session,
                "PUT",
                f"{api_url}/v1/endpoint",
                {"url": endpoint_url, "format": "json", "mode": "every", "enabled": True},
            )
        short_urls: list[str] = []
        for first in range(0, recipients, CHUNK):
            answer = await _call(
                session,
                "POST",
                f"{api_url}/v1/links",
                {
                    "url": TARGET,
                    "client_identifier": name,
                    "https": https,
                    "recipients": [
                        {"phone_number": f"+4477{n:08d}", "client_ref": f"{name}-{n}"}
                        for n in range(first, min(first + CHUNK, recipients))
                    ],
                },
            )
            short_urls += [link["short_url"] for link in answer["links"]]
        expired_urls: list[str] = []
        if expired:
            answer = await _call(
                session,
                "POST",
                f"{api_url}/v1/links",
                {
                    "url": TARGET,
                    "client_identifier": f"{name}-expired",
                    "https": https,
                    "recipients": [{"phone_number": f"+4478{n:08d}"} for n in range(expired)],
                },
            )
            for link in answer["links"]:
                await _call(
                    session,
                    "PATCH",
                    f"{api_url}/v1/links/{link['token']}",
                    {"expires_in_days": 0},
                )
                expired_urls.append(link["short_url"])
    return Campaign(name, short_urls, expired_urls)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", default="http://127.0.0.1:8081")
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--expired", type=int, default=100)
    parser.add_argument("--campaign", help="client_identifier (default load-<time>)")
    parser.add_argument("--endpoint-url", help="point the account's endpoint here first")
    parser.add_argument("--out", type=Path, default=CAMPAIGN_FILE)
    args = parser.parse_args()
    key = os.environ.get("SHORTLINK_API_KEY")
    if not key:
        sys.stderr.write("set SHORTLINK_API_KEY to the account's API key\n")
        return 2
    try:
        campaign = asyncio.run(
            create_campaign(
                args.api_url,
                key,
                args.recipients,
                expired=args.expired,
                name=args.campaign,
                endpoint_url=args.endpoint_url,
            )
        )
    except (SeedError, aiohttp.ClientError) as exc:
        sys.stderr.write(f"seeding failed: {exc}\n")
        return 1
    campaign.dump(args.out)
    print(f"campaign {campaign.name}: {len(campaign.short_urls):,} links in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
