"""/v1/messages: per-recipient bodies with tracked links, length and segments."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg
import pytest

from shortlink import validation
from shortlink.api import rewrite, sms
from shortlink.api.app import create_app
from shortlink.api.config import ApiConfig
from shortlink.api.messages import MAX_VALUE
from tests.infra import running
from tests.shortlink.api.conftest import SHORT_DOMAIN, Client, Tenant


async def test_track_mode_rewrites_each_recipient(client: Client, db: asyncpg.Connection) -> None:
    """Every recipient gets the body with a short URL of their own in place of #track()."""
    answer = await client.post(
        "/v1/messages",
        {
            "to": ["+44 7700 900001", {"phone_number": "+447700900002", "client_ref": "own-ref"}],
            "body": 'Hello! Offer: #track(\\"https://shop.example/deal\\"). Bye',
            "mode": "track",
            "client_ref": "shared-ref",
            "client_identifier": "spring",
        },
    )
    assert answer.status == 201
    first, second = answer.json["messages"]
    assert (first["to"], first["client_ref"]) == ("447700900001", "shared-ref")
    assert (second["to"], second["client_ref"]) == ("447700900002", "own-ref")
    [link] = first["links"]
    assert first["body"] == f"Hello! Offer: https://{SHORT_DOMAIN}/{link['token']}. Bye"
    assert link["target_url"] == "https://shop.example/deal"
    assert second["links"][0]["token"] != link["token"]
    assert (first["encoding"], first["segments"]) == ("GSM-7", 1)
    assert first["length"] == len(first["body"])
    row = await db.fetchrow(
        "SELECT phone_number, client_ref, client_identifier FROM links WHERE id = $1",
        link["tracking_url_id"],
    )
    assert tuple(row) == ("447700900001", "shared-ref", "spring")


async def test_first_and_last_modes(client: Client) -> None:
    """first replaces the first space-delimited URL, last only the last one."""
    body = "Buy at https://a.example/1 or https://b.example/2. Thanks"
    first = (
        await client.post(
            "/v1/messages", {"to": ["447700900003"], "body": body, "mode": "first", "https": False}
        )
    ).json
    message = first["messages"][0]
    token = message["links"][0]["token"]
    assert message["body"] == f"Buy at {SHORT_DOMAIN}/{token} or https://b.example/2. Thanks"
    last = (
        await client.post("/v1/messages", {"to": ["447700900003"], "body": body, "mode": "last"})
    ).json
    message = last["messages"][0]
    token = message["links"][0]["token"]
    assert (
        message["body"] == f"Buy at https://a.example/1 or https://{SHORT_DOMAIN}/{token}. Thanks"
    )
    assert message["links"][0]["target_url"] == "https://b.example/2"


async def test_template_mode_with_shared_and_own_values(client: Client) -> None:
    """Template slots take shared or per-recipient values; only URL values become links."""
    answer = await client.post(
        "/v1/messages",
        {
            "to": [
                {"phone_number": "447700900004", "vars": ["Asha", "https://shop.example/a"]},
                "447700900005",
            ],
            "body": "Dear {#var#}, your order: {#var#} - Shop",
            "mode": "template",
            "vars": ["customer", "https://shop.example/default"],
        },
    )
    assert answer.status == 201
    own, shared = answer.json["messages"]
    assert own["body"].startswith("Dear Asha, your order: https://sl.test/")
    assert own["body"].endswith(" - Shop")
    assert own["links"][0]["target_url"] == "https://shop.example/a"
    assert shared["body"].startswith("Dear customer, your order: https://sl.test/")
    assert shared["links"][0]["target_url"] == "https://shop.example/default"


async def test_unicode_body_is_ucs2_with_segments(client: Client) -> None:
    """A body with a character outside GSM-7 is UCS-2 and counted in 67-unit segments."""
    body = "Привет! " * 10 + "#track('https://a.example/x')"
    message = (await client.post("/v1/messages", {"to": ["447700900006"], "body": body})).json[
        "messages"
    ][0]
    assert message["encoding"] == "UCS-2"
    assert message["length"] == len(message["body"])
    assert message["segments"] == -(-message["length"] // 67)


async def test_nothing_to_track_and_bad_input_are_422(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """No link in the chosen mode, a bad URL, phone or mode: 422 that says what, nothing made."""
    cases = [
        ({"to": ["447700900007"], "body": "No links at all", "mode": "last"}, "nothing_to_track"),
        ({"to": ["447700900007"], "body": '#track("javascript:alert(1)")'}, "validation_failed"),
        ({"to": ["0770 0900007"], "body": '#track("https://a.example")'}, "validation_failed"),
        (
            {"to": ["447700900007"], "body": "x https://a.example", "mode": "middle"},
            "validation_failed",
        ),
        ({"to": [], "body": "x https://a.example", "mode": "first"}, "validation_failed"),
        ({"body": "x https://a.example"}, "validation_failed"),
        (
            {
                "to": ["447700900007"],
                "body": "{#var#} and {#var#}",
                "mode": "template",
                "vars": ["https://a.example"],
            },
            "validation_failed",
        ),
    ]
    for body, code in cases:
        answer = await client.post("/v1/messages", body)
        assert answer.status == 422, body
        assert answer.json["error"]["code"] == code, body
    count = await db.fetchval("SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id)
    assert count == 0


async def test_messages_are_idempotent_too(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """An Idempotency-Key on /v1/messages returns the same bodies and links on retry."""
    body = {"to": ["447700900008"], "body": 'Go #track("https://a.example/go")'}
    first = await client.post("/v1/messages", body, headers={"Idempotency-Key": "m-1"})
    again = await client.post("/v1/messages", body, headers={"Idempotency-Key": "m-1"})
    assert again.json == first.json
    assert (
        await db.fetchval("SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id)
        == 1
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"client_identifier": "spring\u0000"}, "client_identifier"),
        ({"client_ref": "m\u00001"}, "client_ref"),
        ({"to": [{"phone_number": "+447700900001", "client_ref": "\u0000"}]}, "to[0].client_ref"),
        ({"mode": "template", "body": "Hi {#var#}", "vars": ["x\u0000"]}, "vars[0]"),
        ({"body": 'Offer \u0000 #track("https://shop.example/deal")'}, "body"),
        ({"to": None}, "to"),
    ],
)
async def test_text_that_cannot_be_stored_is_422(
    client: Client, db: asyncpg.Connection, tenant: Tenant, change: dict[str, object], field: str
) -> None:
    """A NUL in any text field (or `to` null) is a 422 naming the field; nothing is created."""
    body = {"to": ["+447700900001"], "body": '#track("https://shop.example/deal")', **change}
    answer = await client.post("/v1/messages", body)
    assert answer.status == 422
    assert field in [d["field"] for d in answer.json["error"]["details"]]
    count = await db.fetchval("SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id)
    assert count == 0


async def test_links_over_max_links_per_request_are_422_before_any_work(
    api_env: dict[str, str], tenant: Tenant, db: asyncpg.Connection
) -> None:
    """Directives x recipients over MAX_LINKS_PER_REQUEST: 422 too_many_links, nothing created."""
    config = ApiConfig.from_env({**api_env, "MAX_LINKS_PER_REQUEST": "5"})
    body = '#track("https://a.example/1") and #track("https://b.example/2")'
    to = [f"+4477009000{i:02d}" for i in range(3)]
    async with running(create_app(config)) as server, aiohttp.ClientSession() as session:
        api = Client(server, session, tenant.key)
        refused = await api.post("/v1/messages", {"to": to, "body": body})
        assert (refused.status, refused.json["error"]["code"]) == (422, "too_many_links")
        assert "6 links" in refused.json["error"]["message"]
        count = await db.fetchval(
            "SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id
        )
        assert count == 0
        assert (await api.post("/v1/messages", {"to": to[:2], "body": body})).status == 201


async def test_first_mode_finds_domain_names_and_keeps_brackets_balanced(client: Client) -> None:
    """Seed 001's 'first URL/domain name': a bare domain is tracked as https://, file names not."""
    answer = await client.post(
        "/v1/messages",
        {
            "to": ["+44 (0)7700 900123"],
            "body": "Open readme.md e.g. 3.5 at xoxzo.com/en/ (see https://en.wikipedia.org/wiki/Foo_(bar))",
            "mode": "first",
        },
    )
    assert answer.status == 201, answer.json
    [message] = answer.json["messages"]
    [link] = message["links"]
    assert message["to"] == "447700900123"
    assert link["target_url"] == "https://xoxzo.com/en/"
    assert message["body"].startswith(f"Open readme.md e.g. 3.5 at {link['short_url']} (see ")
    last = await client.post(
        "/v1/messages",
        {
            "to": ["447700900123"],
            "body": "詳細は(see https://en.wikipedia.org/wiki/Foo_(bar))。",
            "mode": "last",
        },
    )
    [message] = last.json["messages"]
    [link] = message["links"]
    assert link["target_url"] == "https://en.wikipedia.org/wiki/Foo_(bar)"
    assert message["body"] == f"詳細は(see {link['short_url']})。"


async def test_an_impossible_phone_number_is_422_naming_it_and_nothing_is_made(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A number too short or long for its country code is refused by index; no link is made."""
    answer = await client.post(
        "/v1/messages",
        {
            "to": ["+44 7700 900123", "+44 7700 9001", {"phone_number": "+1 415 555 01000"}],
            "body": "Sale at shop.example.com",
            "mode": "first",
        },
    )
    assert answer.status == 422
    details = {d["field"]: d["message"] for d in answer.json["error"]["details"]}
    assert set(details) == {"to[1].phone_number", "to[2].phone_number"}
    assert "+44" in details["to[1].phone_number"]
    assert "7, 9 or 10 digits" in details["to[1].phone_number"]
    count = await db.fetchval("SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id)
    assert count == 0


async def links_of(db: asyncpg.Connection, tenant: Tenant) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id
    )
    return count


async def test_the_issues_hostile_template_is_refused_at_once(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Issue 21: a 1,000,000-character template value for 5,000 recipients (5 GB to render)
    is a 422 naming the value, before anything is made."""
    answer = await client.post(
        "/v1/messages",
        {
            "to": [f"+4477009{i:05d}" for i in range(5_000)],
            "body": "{#var#} {#var#}",
            "mode": "template",
            "vars": ["https://shop.example/a", "A" * 1_000_000],
        },
    )
    assert (answer.status, answer.json["error"]["code"]) == (422, "validation_failed")
    [detail] = answer.json["error"]["details"]
    assert detail == {"field": "vars[1]", "message": f"must be at most {MAX_VALUE:,} characters"}
    assert await links_of(db, tenant) == 0


async def test_values_at_most_max_value_characters_each(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A template value of MAX_VALUE characters is taken; one more is a 422 naming it."""
    body = {"body": "{#var#} {#var#}", "mode": "template"}
    long = "https://shop.example/" + "a" * (MAX_VALUE - len("https://shop.example/"))
    to = [{"phone_number": "+447700900001", "vars": [long, "B" * MAX_VALUE]}]
    assert (await client.post("/v1/messages", {**body, "to": to})).status == 201
    to = [{"phone_number": "+447700900002", "vars": [long, "B" * (MAX_VALUE + 1)]}]
    refused = await client.post("/v1/messages", {**body, "to": to})
    assert refused.status == 422
    assert refused.json["error"]["details"][0]["field"] == "to[0].vars[1]"
    assert await links_of(db, tenant) == 1


async def test_an_answer_over_max_response_bytes_is_refused_before_anything_is_made(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Values within their limits, a body within MAX_REQUEST_BYTES, but 25,000 messages of
    11 KB: the answer would pass MAX_RESPONSE_BYTES (256 MiB), so 422 response_too_large at
    once and no link is made."""
    answer = await client.post(
        "/v1/messages",
        {
            "to": [f"+4477009{i:05d}" for i in range(25_000)],
            "body": "{#var#} " + "y" * 9_000 + " {#var#}",
            "mode": "template",
            "vars": ["https://shop.example/a", "B" * MAX_VALUE],
        },
    )
    assert (answer.status, answer.json["error"]["code"]) == (422, "response_too_large")
    assert answer.json["error"]["details"][0]["field"] == "to"
    assert "MAX_RESPONSE_BYTES" in answer.json["error"]["message"]
    assert await links_of(db, tenant) == 0


async def test_an_answer_over_a_configured_max_response_bytes_is_refused(
    api_env: dict[str, str], tenant: Tenant, db: asyncpg.Connection
) -> None:
    """With MAX_RESPONSE_BYTES=1024, three 330-character messages are refused (nothing is
    made), one passes and its answer is within the limit."""
    config = ApiConfig.from_env({**api_env, "MAX_RESPONSE_BYTES": "1024"})
    to = [f"+4477009000{i:02d}" for i in range(3)]
    message = {"body": "x" * 300 + ' #track("https://a.example/1")'}
    async with running(create_app(config)) as server, aiohttp.ClientSession() as session:
        api = Client(server, session, tenant.key)
        refused = await api.post("/v1/messages", {**message, "to": to})
        assert (refused.status, refused.json["error"]["code"]) == (422, "response_too_large")
        assert await links_of(db, tenant) == 0
        made = await api.post("/v1/messages", {**message, "to": to[:1]})
        assert made.status == 201
        assert len(made.body) <= 1024


@pytest.mark.parametrize("https", [True, False])
@pytest.mark.parametrize(
    ("mode", "body", "values"),
    [
        ("track", 'Sale #track("https://shop.example/a") now', None),
        ("track", 'Only €5 [today] {now} ~ #track("https://shop.example/a") ' + "^" * 150, None),
        ("track", 'Autumn \U0001f342 #track("https://shop.example/a") ' + "x" * 120, None),
        ("first", "Buy at shop.example/a or https://b.example/2 \U0001f381", None),
        ("last", "Buy at https://a.example/1 or https://shop.example/a. € " + "z" * 160, None),
        ("template", "Dear {#var#}, see {#var#} \U0001f642", ["Asha", "https://shop.example/a"]),
    ],
)
async def test_every_message_is_its_plan_rendered_and_measured(
    client: Client, mode: str, body: str, values: list[str] | None, https: bool
) -> None:
    """Each mode, with and without https: each body is the plan with that recipient's short
    URLs, and its length, encoding and segments are sms.measure's of that body."""
    request = {"to": ["447700900001", "447700900002"], "body": body, "mode": mode, "https": https}
    if values is not None:
        request["vars"] = values
    answer = await client.post("/v1/messages", request)
    assert answer.status == 201, answer.json
    plan = rewrite.plan_template(body, values) if values else rewrite.plan(body, mode)
    tokens = set()
    for message in answer.json["messages"]:
        urls = [link["short_url"] for link in message["links"]]
        assert urls == [
            f"{'https://' if https else ''}{SHORT_DOMAIN}/{link['token']}"
            for link in message["links"]
        ]
        assert message["body"] == plan.render(urls)
        measured = sms.measure(message["body"])
        assert (message["length"], message["encoding"], message["segments"]) == (
            measured.length,
            measured.encoding,
            measured.segments,
        )
        tokens.update(link["token"] for link in message["links"])
    assert len(tokens) == 2


async def test_other_requests_are_answered_while_a_big_one_is_checked(
    client: Client, db: asyncpg.Connection, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While 50,000 phone numbers are being checked, another request to the same server is
    answered before the big one is (which is then a 422 for its last number)."""
    checking = asyncio.Event()
    check = validation.phone_number

    def counted(value: str) -> str:
        if value == "+447700912345":  # well inside the list: the big request is under way
            checking.set()
        return check(value)

    monkeypatch.setattr(validation, "phone_number", counted)
    to = [f"+4477009{i:05d}" for i in range(50_000)] + ["+44 7700 9001"]
    big = asyncio.create_task(
        client.post("/v1/messages", {"to": to, "body": '#track("https://shop.example/a")'})
    )
    await checking.wait()
    other = await client.get("/v1/openapi.json")
    assert other.status == 200
    assert not big.done()
    refused = await big
    assert refused.status == 422
    fields = [detail["field"] for detail in refused.json["error"]["details"]]
    assert fields == ["to[50000].phone_number"]
    assert await links_of(db, tenant) == 0
