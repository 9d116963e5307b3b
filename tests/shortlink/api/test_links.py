"""/v1/links: bulk per-recipient links, validation, idempotency, status and changes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest

from shortlink.api.app import create_app as create_api
from shortlink.api.config import ApiConfig
from shortlink.redirect.app import create_app as create_redirect
from shortlink.redirect.app import make_handler
from shortlink.redirect.config import RedirectConfig
from tests.infra import running, wait_until
from tests.shortlink.api.conftest import SHORT_DOMAIN, Client, Tenant, raw_request


async def test_one_link_per_recipient_in_request_order(
    client: Client, db: asyncpg.Connection
) -> None:
    """Each recipient gets its own link; the answer keeps the request's order."""
    recipients = [
        {"phone_number": f"+44 7700 900{i:03d}", "client_ref": f"msg-{i}"} for i in range(50)
    ]
    answer = await client.post(
        "/v1/links",
        {
            "url": "https://shop.example.com/sale?x=1",
            "recipients": recipients,
            "client_identifier": "spring",
            "expires_in_days": 30,
        },
    )
    assert answer.status == 201
    made = answer.json["links"]
    assert [m["client_ref"] for m in made] == [f"msg-{i}" for i in range(50)]
    assert made[3]["phone_number"] == "447700900003"
    assert len({m["token"] for m in made}) == 50
    assert all(m["short_url"] == f"https://{SHORT_DOMAIN}/{m['token']}" for m in made)
    row = await db.fetchrow(
        "SELECT target_url, client_identifier, expires_at - created_at AS life "
        "FROM links WHERE id = $1",
        made[0]["tracking_url_id"],
    )
    assert row["target_url"] == "https://shop.example.com/sale?x=1"
    assert row["client_identifier"] == "spring"
    assert row["life"] == timedelta(days=30)


async def test_a_bracketed_trunk_prefix_is_dropped(client: Client) -> None:
    """+44 (0)7700 900123 is stored as 447700900123, the national 0 left out."""
    answer = await client.post(
        "/v1/links",
        {"url": "https://example.com/", "recipients": [{"phone_number": "+44 (0)7700 900123"}]},
    )
    assert answer.status == 201
    assert answer.json["links"][0]["phone_number"] == "447700900123"


async def test_short_urls_without_scheme_and_no_recipients(client: Client) -> None:
    """https=false gives `domain/token`; no recipients gives one link without a phone."""
    answer = await client.post("/v1/links", {"url": "https://example.com/", "https": False})
    assert answer.status == 201
    [link] = answer.json["links"]
    assert link["short_url"] == f"{SHORT_DOMAIN}/{link['token']}"
    assert link["phone_number"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "javascript:alert(1)"}, "url"),
        ({"url": "data:text/html,hi"}, "url"),
        ({"url": "https://user:pw@example.com/"}, "url"),
        ({"url": f"https://{SHORT_DOMAIN}/AbC1234"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": "ftp://example.com/file"}, "url"),
        ({"url": "https://example.com/" + "a" * 3000}, "url"),
        ({}, "url"),
        (
            {"url": "https://example.com/", "recipients": [{"phone_number": "07700 900123"}]},
            "recipients[0].phone_number",
        ),
        (
            {"url": "https://example.com/", "recipients": [{}, {"phone_number": "+999 1234"}]},
            "recipients[1].phone_number",
        ),
        (
            {"url": "https://example.com/", "recipients": [{"phone_number": "+44 abc"}]},
            "recipients[0].phone_number",
        ),
        (
            {"url": "https://example.com/", "recipients": [{}, {}, {"phone_number": "+44 77009"}]},
            "recipients[2].phone_number",
        ),
        (
            {"url": "https://example.com/", "recipients": [{"phone_number": "+1 (415) 555-01"}]},
            "recipients[0].phone_number",
        ),
        ({"url": "https://example.com/", "recipients": "everyone"}, "recipients"),
        ({"url": "https://example.com/", "recipients": [5]}, "recipients[0]"),
        ({"url": "https://example.com/", "expires_in_days": 0}, "expires_in_days"),
        ({"url": "https://example.com/", "unsafe": "yes"}, "unsafe"),
        ({"url": "https://example.com/", "colour": "red"}, "colour"),
        ({"url": "https://example.com/", "client_identifier": "spring\u0000"}, "client_identifier"),
        (
            {"url": "https://example.com/", "recipients": [{"client_ref": "m\u00001"}]},
            "recipients[0].client_ref",
        ),
        ({"url": "https://example.com/a\u0000b"}, "url"),
        ({"url": " https://example.com/"}, "url"),
        ({"url": "https://example.com:0/"}, "url"),
        ({"url": "https://example.com/", "expires_in_days": 7.5}, "expires_in_days"),
    ],
)
async def test_bad_input_is_422_naming_the_field(
    client: Client, db: asyncpg.Connection, tenant: Tenant, body: dict[str, object], field: str
) -> None:
    """Every rejection is a 422 naming the field (and index), and creates nothing."""
    before = await db.fetchval(
        "SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id
    )
    answer = await client.post("/v1/links", body)
    assert answer.status == 422
    assert answer.json["error"]["code"] == "validation_failed"
    assert field in [d["field"] for d in answer.json["error"]["details"]]
    after = await db.fetchval("SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id)
    assert before == after


async def test_not_json_is_400_and_wrong_type_is_415(client: Client) -> None:
    """A body that is not JSON is 400; one not sent as JSON is 415."""
    answer = await client.post("/v1/links", raw=b"{not json")
    assert (answer.status, answer.json["error"]["code"]) == (400, "invalid_json")
    answer = await client.post("/v1/links", raw=b"url=x", headers={"Content-Type": "text/plain"})
    assert answer.status == 415


async def test_idempotency_key_returns_the_first_answer(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A retried request with the same Idempotency-Key gets the same links, none created again."""
    body = {
        "url": "https://example.com/",
        "recipients": [{"client_ref": f"r{i}"} for i in range(5)],
    }
    first = await client.post("/v1/links", body, headers={"Idempotency-Key": "batch-7"})
    second = await client.post("/v1/links", body, headers={"Idempotency-Key": "batch-7"})
    assert (first.status, second.status) == (201, 201)
    assert second.json == first.json
    assert second.headers["Idempotent-Replayed"] == "true"
    count = await db.fetchval("SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id)
    assert count == 5
    other = await client.post(
        "/v1/links", {**body, "url": "https://example.org/"}, headers={"Idempotency-Key": "batch-7"}
    )
    assert (other.status, other.json["error"]["code"]) == (422, "idempotency_key_reused")


async def test_concurrent_retries_with_one_key_create_once(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Ten simultaneous requests with one key: one creation, ten identical answers."""
    body = {
        "url": "https://example.com/",
        "recipients": [{"client_ref": f"c{i}"} for i in range(200)],
    }
    answers = await asyncio.gather(
        *(client.post("/v1/links", body, headers={"Idempotency-Key": "same"}) for _ in range(10))
    )
    assert {a.status for a in answers} == {201}
    assert len({a.body for a in answers}) == 1
    count = await db.fetchval("SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id)
    assert count == 200


async def test_one_hundred_thousand_recipients_in_one_request(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A 100,000-recipient request creates 100,000 distinct links."""
    recipients = [{"phone_number": f"4477{i:08d}", "client_ref": f"m{i}"} for i in range(100_000)]
    answer = await client.post(
        "/v1/links",
        {"url": "https://example.com/big", "recipients": recipients, "client_identifier": "big"},
    )
    assert answer.status == 201
    made = answer.json["links"]
    assert len(made) == 100_000
    assert made[-1]["client_ref"] == "m99999"
    assert len({m["token"] for m in made}) == 100_000
    stats = await db.fetchval(
        "SELECT links FROM campaign_stats WHERE account_id = $1 AND campaign = 'big'",
        tenant.account_id,
    )
    assert stats == 100_000


async def test_status_and_lookup_by_client_ref(client: Client, db: asyncpg.Connection) -> None:
    """GET by token shows link, shortlink, accessed, accessed_on, clicks; client_ref finds it."""
    made = (
        await client.post(
            "/v1/links",
            {
                "url": "https://example.com/s",
                "recipients": [{"phone_number": "+447700900111", "client_ref": "msg-s"}],
            },
        )
    ).json["links"][0]
    status = (await client.get(f"/v1/links/{made['token']}")).json
    assert status["link"] == "https://example.com/s"
    assert status["shortlink"] == made["short_url"]
    assert (status["accessed"], status["accessed_on"], status["clicks"]) == (False, None, 0)
    clicked = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    await db.execute(
        "INSERT INTO first_clicks (link_id, clicked_at) VALUES ($1, $2)",
        made["tracking_url_id"],
        clicked,
    )
    status = (await client.get(f"/v1/links/{made['token']}")).json
    assert (status["accessed"], status["accessed_on"]) == (True, "2026-11-22T10:00:00Z")
    found = (await client.get("/v1/links?client_ref=msg-s")).json["links"]
    assert [f["token"] for f in found] == [made["token"]]
    assert (await client.get("/v1/links/NoSuch99")).status == 404
    assert (await client.get("/v1/links/bad-token!")).status == 404


# Well before the listener's fallback poll (POLL_EVERY, 10 s) could have brought a change.
NOTIFIED = 2.0


async def test_changes_reach_the_redirect_server_at_once(
    client: Client, redirect_env: dict[str, str], api_env: dict[str, str]
) -> None:
    """PATCH and DELETE reach a running redirect worker at once (notified), not at its next poll."""
    made = (await client.post("/v1/links", {"url": "https://example.com/old"})).json["links"][0]
    redirect = create_redirect(RedirectConfig.from_env({**redirect_env, **api_env}))
    async with running(redirect, make_handler) as server, aiohttp.ClientSession() as session:
        url = f"{server.url}/{made['token']}"

        async def location() -> tuple[int, str | None]:
            async with session.get(url, allow_redirects=False) as r:
                return r.status, r.headers.get("Location")

        async def answers(status: int, target: str | None = None) -> bool:
            got = await location()
            return got[0] == status and target in (None, got[1])

        assert await location() == (302, "https://example.com/old")  # now cached
        changed = await client.call(
            "PATCH", f"/v1/links/{made['token']}", {"url": "https://example.com/new"}
        )
        assert changed.json["link"] == "https://example.com/new"
        await wait_until(
            lambda: answers(302, "https://example.com/new"), within=NOTIFIED, what="the change"
        )
        # expires_in_days 0 expires it now; a later PATCH can give it time again.
        expired = await client.call("PATCH", f"/v1/links/{made['token']}", {"expires_in_days": 0})
        assert expired.status == 200
        await wait_until(lambda: answers(410), within=NOTIFIED, what="the expiry")
        await client.call("PATCH", f"/v1/links/{made['token']}", {"expires_in_days": 1})
        await wait_until(lambda: answers(302), within=NOTIFIED, what="the new expiry")
        assert (await client.call("DELETE", f"/v1/links/{made['token']}")).status == 204
        await wait_until(lambda: answers(410), within=NOTIFIED, what="the disable")
    assert (await client.get(f"/v1/links/{made['token']}")).json["disabled"] is True


async def test_a_deleted_link_is_disabled_and_stays_readable(client: Client) -> None:
    """DELETE disables a link that stays readable and changeable, as the document says."""
    made = (
        await client.post(
            "/v1/links", {"url": "https://example.com/", "recipients": [{"client_ref": "gone"}]}
        )
    ).json["links"][0]
    path = f"/v1/links/{made['token']}"
    assert (await client.call("DELETE", path)).status == 204
    shown = await client.get(path)
    assert (shown.status, shown.json["disabled"]) == (200, True)
    [listed] = (await client.get("/v1/links?client_ref=gone")).json["links"]
    assert listed["disabled"] is True
    changed = await client.call("PATCH", path, {"url": "https://example.com/later"})
    assert (changed.status, changed.json["link"], changed.json["disabled"]) == (
        200,
        "https://example.com/later",
        True,
    )
    assert (await client.call("DELETE", path)).status == 204
    assert (await client.call("DELETE", "/v1/links/NoSuch99")).status == 404


async def test_patch_validates(client: Client) -> None:
    """An empty or invalid PATCH is a 422 naming the field."""
    made = (await client.post("/v1/links", {"url": "https://example.com/"})).json["links"][0]
    path = f"/v1/links/{made['token']}"
    assert (await client.call("PATCH", path, {})).status == 422
    bad = await client.call("PATCH", path, {"url": "mailto:x@example.com"})
    assert bad.json["error"]["details"][0]["field"] == "url"
    beyond = await client.call("PATCH", path, {"expires_in_days": 366})
    assert beyond.json["error"]["details"][0]["field"] == "expires_in_days"
    longer = await client.call("PATCH", path, {"expires_in_days": 365, "unsafe": True})
    assert longer.status == 200
    assert longer.json["unsafe"] is True


async def test_client_ref_query_must_be_storable_text(client: Client) -> None:
    """GET /v1/links?client_ref= with nothing, a NUL or more than 200 characters is 422."""
    for query in ("", "%00", "m%001", "x" * 201):
        answer = await client.get(f"/v1/links?client_ref={query}")
        assert answer.status == 422, query
        assert answer.json["error"]["details"][0]["field"] == "client_ref"
    assert (await client.get("/v1/links")).status == 422


@pytest.mark.parametrize("key", [b"caf\xc3\xa9", b"\xff\xfe", b"tab\there", b"k" * 256])
async def test_idempotency_key_must_be_visible_ascii(
    client: Client, db: asyncpg.Connection, tenant: Tenant, key: bytes
) -> None:
    """An Idempotency-Key that is not 1 to 255 visible ASCII characters is a 422, not a 500."""
    answer = await raw_request(
        client.server,
        "POST",
        b"/v1/links",
        [
            b"Authorization: Bearer " + tenant.key.encode(),
            b"Content-Type: application/json",
            b"Idempotency-Key: " + key,
        ],
        b'{"url": "https://example.com/"}',
    )
    assert answer.status == 422
    assert answer.json["error"]["details"] == [
        {"field": "Idempotency-Key", "message": "must be 1 to 255 visible ASCII characters"}
    ]
    count = await db.fetchval("SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id)
    assert count == 0


async def test_null_fields_of_a_patch_change_nothing(client: Client) -> None:
    """PATCH with expires_in_days or unsafe null leaves them as they were (null is not given)."""
    made = await client.post("/v1/links", {"url": "https://example.com/", "unsafe": True})
    token = made.json["links"][0]["token"]
    before = (await client.get(f"/v1/links/{token}")).json
    answer = await client.call(
        "PATCH", f"/v1/links/{token}", {"expires_in_days": None, "unsafe": None}
    )
    assert answer.status == 200
    assert (answer.json["expires_at"], answer.json["unsafe"]) == (before["expires_at"], True)


async def test_links_over_max_links_per_request_are_422_before_any_work(
    api_env: dict[str, str], tenant: Tenant, db: asyncpg.Connection
) -> None:
    """More recipients than MAX_LINKS_PER_REQUEST: 422 too_many_links and nothing is created."""
    config = ApiConfig.from_env({**api_env, "MAX_LINKS_PER_REQUEST": "3"})
    async with running(create_api(config)) as server, aiohttp.ClientSession() as session:
        api = Client(server, session, tenant.key)
        body = {"url": "https://example.com/", "recipients": [{"client_ref": "a"}] * 4}
        refused = await api.post("/v1/links", body)
        assert (refused.status, refused.json["error"]["code"]) == (422, "too_many_links")
        assert refused.json["error"]["details"][0]["field"] == "recipients"
        assert "MAX_LINKS_PER_REQUEST" in refused.json["error"]["message"]
        count = await db.fetchval(
            "SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id
        )
        assert count == 0
        body["recipients"] = body["recipients"][:3]
        assert (await api.post("/v1/links", body)).status == 201


async def test_a_callback_url_is_checked_and_shown_in_the_links_status(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """links and messages take a callback_url, each link's status shows it; one that could
    not be an endpoint's URL is 422 and creates nothing."""
    hook = "http://127.0.0.1:9/callback?campaign=a"
    made = await client.post(
        "/v1/links",
        {
            "url": "https://e.example/",
            "callback_url": hook,
            "recipients": [{"client_ref": "cb-1"}, {"client_ref": "cb-2"}],
        },
    )
    assert made.status == 201
    token = made.json["links"][0]["token"]
    assert (await client.get(f"/v1/links/{token}")).json["callback_url"] == hook
    listed = (await client.get("/v1/links?client_ref=cb-2")).json["links"]
    assert [link["callback_url"] for link in listed] == [hook]
    message = await client.post(
        "/v1/messages",
        {
            "to": ["447700900123"],
            "body": "Go https://e.example/m now",
            "mode": "first",
            "callback_url": hook,
        },
    )
    assert message.status == 201
    token = message.json["messages"][0]["links"][0]["token"]
    assert (await client.get(f"/v1/links/{token}")).json["callback_url"] == hook
    plain = (await client.post("/v1/links", {"url": "https://e.example/"})).json["links"][0]
    assert (await client.get(f"/v1/links/{plain['token']}")).json["callback_url"] is None
    before = await db.fetchval(
        "SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id
    )
    for bad in (
        "ftp://127.0.0.1/x",
        "http://user:pw@127.0.0.1/",
        "http://127.0.0.1:0/",
        "http://no-such-host.invalid/hook",
        "http://127.1/",
    ):
        for path, body in (
            ("/v1/links", {"url": "https://e.example/", "callback_url": bad}),
            (
                "/v1/messages",
                {
                    "to": ["447700900123"],
                    "body": 'x #track("https://e.example/")',
                    "callback_url": bad,
                },
            ),
        ):
            answer = await client.post(path, body)
            assert answer.status == 422, (path, bad)
            assert answer.json["error"]["details"][0]["field"] == "callback_url"
    after = await db.fetchval("SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id)
    assert after == before


async def test_a_host_name_label_over_63_characters_is_a_422_wherever_a_url_is_taken(
    client: Client,
) -> None:
    """A host label over 63 characters is a 422 naming the field wherever a URL is taken."""
    host = "a" * 64 + ".example"
    made = (await client.post("/v1/links", {"url": "https://e.example/"})).json["links"][0]
    track = 'x #track("https://e.example/")'
    for method, path, body, field in (
        ("PUT", "/v1/endpoint", {"url": f"https://{host}/hook"}, "url"),
        (
            "POST",
            "/v1/links",
            {"url": "https://e.example/", "callback_url": f"https://{host}/"},
            "callback_url",
        ),
        (
            "POST",
            "/v1/messages",
            {"to": ["447700900123"], "body": track, "callback_url": f"http://{host}/"},
            "callback_url",
        ),
        ("POST", "/v1/links", {"url": f"https://{host}/"}, "url"),
        ("PATCH", f"/v1/links/{made['token']}", {"url": f"https://{host}/"}, "url"),
    ):
        answer = await client.call(method, path, body)
        assert answer.status == 422, (method, path, answer.body)
        [detail] = answer.json["error"]["details"]
        assert detail["field"] == field
        assert "longer than 63 characters" in detail["message"]


async def test_a_private_callback_url_is_refused_by_default(
    api_env: dict[str, str], tenant: Tenant
) -> None:
    """Without ALLOW_PRIVATE_ENDPOINTS, a callback URL on loopback or a private network is 422,
    as an endpoint's would be."""
    env = {**api_env, "ALLOW_PRIVATE_ENDPOINTS": "false"}
    async with (
        running(create_api(ApiConfig.from_env(env))) as server,
        aiohttp.ClientSession() as session,
    ):
        client = Client(server, session, tenant.key)
        for url in ("http://127.0.0.1:9/cb", "http://10.1.2.3/cb", "http://localhost/cb"):
            answer = await client.post(
                "/v1/links", {"url": "https://e.example/", "callback_url": url}
            )
            assert answer.status == 422, url
            [detail] = answer.json["error"]["details"]
            assert detail["field"] == "callback_url"
            assert "ALLOW_PRIVATE_ENDPOINTS" in detail["message"]


async def test_an_answer_over_a_configured_max_response_bytes_is_refused(
    api_env: dict[str, str], tenant: Tenant, db: asyncpg.Connection
) -> None:
    """With MAX_RESPONSE_BYTES=1024, nine links with 100-character client_refs are refused
    (nothing is made); three pass and their answer is within the limit."""
    config = ApiConfig.from_env({**api_env, "MAX_RESPONSE_BYTES": "1024"})
    recipients = [
        {"phone_number": f"+4477009000{i:02d}", "client_ref": "r" * 100} for i in range(9)
    ]
    url = "https://a.example/1"
    async with running(create_api(config)) as server, aiohttp.ClientSession() as session:
        api = Client(server, session, tenant.key)
        refused = await api.post("/v1/links", {"url": url, "recipients": recipients})
        assert (refused.status, refused.json["error"]["code"]) == (422, "response_too_large")
        assert refused.json["error"]["details"][0]["field"] == "recipients"
        count = await db.fetchval(
            "SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id
        )
        assert count == 0
        made = await api.post("/v1/links", {"url": url, "recipients": recipients[:3]})
        assert made.status == 201
        assert len(made.body) <= 1024
