"""/v1/domains: branded short domains added, verified by a real TXT lookup, changed, used by
links and messages, removed; hostile names and documents refused with a 4xx."""

from __future__ import annotations

import asyncio
import contextlib
import random

import asyncpg
import pytest

from forwarder.recorder import record
from shortlink import domains
from shortlink.exceptions import DomainGone
from shortlink.links import NewLink, create_links, fetch_entry
from tests.clicks import clicks, events
from tests.dnsserver import DnsServer
from tests.infra import unique_name
from tests.shortlink.api.conftest import SHORT_DOMAIN, Client, Tenant, new_tenant, raw_request


def fresh_domain() -> str:
    return f"{unique_name('go').replace('_', '-').lower()}.brand.example"


async def verified_domain(client: Client, dns: DnsServer) -> str:
    """A domain of the client's account, verified through the DNS server."""
    name = fresh_domain()
    added = await client.post("/v1/domains", {"domain": name})
    record = added.json["verification"]
    dns.records[record["name"]] = [record["value"]]
    assert (await client.post(f"/v1/domains/{name}/verify")).status == 200
    return name


async def audit_actions(db: asyncpg.Connection, account_id: int) -> list[str]:
    rows = await db.fetch(
        "SELECT action FROM audit_log WHERE account_id = $1 AND action LIKE 'domain.%' ORDER BY id",
        account_id,
    )
    return [row["action"] for row in rows]


async def test_a_domain_is_added_unverified_with_the_txt_record_to_publish(
    client: Client,
) -> None:
    """201 with verified false, default false and the dns-txt record; listed and readable."""
    name = fresh_domain()
    added = await client.post("/v1/domains", {"domain": name.upper() + "."})
    assert added.status == 201
    body = added.json
    assert body["domain"] == name
    assert body["verified"] is False
    assert body["default"] is False
    assert body["verification"]["type"] == "dns-txt"
    assert body["verification"]["name"] == f"_shortlink-challenge.{name}"
    assert len(body["verification"]["value"]) >= 32
    listed = await client.get("/v1/domains")
    assert [d["domain"] for d in listed.json["domains"]] == [name]
    assert (await client.get(f"/v1/domains/{name}")).json == body


async def test_an_internationalised_name_is_stored_in_its_idna_form(client: Client) -> None:
    """A Unicode name is stored as xn-- punycode, shown in Unicode too, and found by either."""
    unicode_name = f"bücher-{random.randrange(10**9)}.example"
    added = await client.post("/v1/domains", {"domain": unicode_name})
    assert added.status == 201
    assert added.json["domain"].startswith("xn--")
    assert added.json["display_name"] == unicode_name
    assert (await client.get(f"/v1/domains/{added.json['domain']}")).status == 200


async def test_a_name_is_claimed_per_account_and_verified_by_one(
    client: Client, api_server: object, db: asyncpg.Connection, dns: DnsServer
) -> None:
    """An unverified claim blocks nobody: another account claims the name with its own TXT
    value; the first to verify gets it, then the others' verify and new adds are 409s."""
    name = fresh_domain()
    mine = await client.post("/v1/domains", {"domain": name})
    assert mine.status == 201
    again = await client.post("/v1/domains", {"domain": name})
    assert again.status == 409
    assert again.json["error"]["code"] == "domain_taken"
    other, third = await new_tenant(db), await new_tenant(db)
    theirs = await client.post("/v1/domains", {"domain": name}, key=other.key)
    assert theirs.status == 201
    assert theirs.json["verification"]["value"] != mine.json["verification"]["value"]
    # Each account sees and changes its own claim only.
    assert (await client.get(f"/v1/domains/{name}", key=other.key)).json == theirs.json
    assert (await client.get(f"/v1/domains/{name}")).json == mine.json
    record = theirs.json["verification"]
    dns.records[record["name"]] = [record["value"]]
    assert (await client.post(f"/v1/domains/{name}/verify", key=other.key)).status == 200
    dns.records[record["name"]] = [record["value"], mine.json["verification"]["value"]]
    late = await client.post(f"/v1/domains/{name}/verify")
    assert late.status == 409
    assert late.json["error"]["code"] == "domain_taken"
    assert (await client.get(f"/v1/domains/{name}")).json["verified"] is False
    refused = await client.post("/v1/domains", {"domain": name}, key=third.key)
    assert refused.status == 409
    assert refused.json["error"]["code"] == "domain_taken"
    assert await domains.is_served(db, name)
    # Once the owner removes it, the waiting claim can be verified.
    assert (await client.call("DELETE", f"/v1/domains/{name}", key=other.key)).status == 204
    assert (await client.post(f"/v1/domains/{name}/verify")).status == 200


async def test_two_claims_verified_at_once_leave_one_owner(
    db: asyncpg.Connection, database_url: str
) -> None:
    """Two accounts' claims marked verified at the same moment: one wins, the other is
    DomainTaken (the unique index on verified names), never two owners."""
    name = fresh_domain()
    first, second = await new_tenant(db), await new_tenant(db)
    for tenant in (first, second):
        await domains.add(db, tenant.account_id, name)
    other = await asyncpg.connect(database_url)
    try:
        results = await asyncio.gather(
            domains.mark_verified(db, first.account_id, name),
            domains.mark_verified(other, second.account_id, name),
            return_exceptions=True,
        )
    finally:
        await other.close()
    assert sorted(type(result).__name__ for result in results) == ["DomainTaken", "Record"]
    owners = await db.fetchval("SELECT count(*) FROM domains WHERE name = $1 AND verified", name)
    assert owners == 1


async def test_links_made_while_the_domain_changes_never_deadlock(
    db: asyncpg.Connection, database_url: str
) -> None:
    """Links for new campaigns on a domain while it is PATCHed: both finish, every round
    (FOR UPDATE on the domain deadlocked with the links' hold and campaign counters)."""
    tenant = await new_tenant(db)
    name = fresh_domain()
    await domains.add(db, tenant.account_id, name, verified=True)
    conns = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        for round_ in range(15):
            made = [
                create_links(
                    conn,
                    tenant.account_id,
                    [NewLink("https://shop.example/a", client_identifier=f"c{round_}-{i}")],
                    domain=name,
                )
                for i, conn in enumerate(conns[:2])
            ]
            changed = [
                domains.update(
                    conn, tenant.account_id, name, not_found_url=f"https://b.example/{round_}{i}"
                )
                for i, conn in enumerate(conns[2:])
            ]
            await asyncio.gather(*made, *changed)
    finally:
        for conn in conns:
            await conn.close()
    count = await db.fetchval("SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id)
    assert count == 30


async def test_a_removal_waits_for_links_being_made_on_the_domain(
    db: asyncpg.Connection, database_url: str
) -> None:
    """Links made on a domain while it is removed: the removal waits for their commit; after
    it, making links on it is DomainGone (the API's 422) and nothing is made."""
    tenant = await new_tenant(db)
    name = fresh_domain()
    await domains.add(db, tenant.account_id, name, verified=True)
    other = await asyncpg.connect(database_url)
    removal: asyncio.Task[list[int]] | None = None
    try:
        async with db.transaction():
            made = await create_links(
                db, tenant.account_id, [NewLink("https://shop.example/a")], domain=name
            )
            removal = asyncio.create_task(domains.remove(other, tenant.account_id, name))
            await asyncio.sleep(0.3)
            waited = not removal.done()  # waits for the links' transaction
        assert await removal
        assert waited
    finally:
        if removal is not None and not removal.done():  # the block above failed first
            removal.cancel()
        if removal is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await removal  # its own error, if any, is raised here, not lost
        await other.close()
    assert await db.fetchval("SELECT domain FROM links WHERE id = $1", made[0].id) == name
    with pytest.raises(DomainGone):
        await create_links(db, tenant.account_id, [NewLink("https://shop.example/b")], domain=name)
    count = await db.fetchval("SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id)
    assert count == 1


@pytest.mark.parametrize(
    "name",
    [
        "",
        "localhost",
        "go.brand.example:8443",
        "127.0.0.1",
        "10.1",
        "[::1]",
        "::1",
        "https://go.brand.example/",
        "user@go.brand.example",
        "go..brand.example",
        "-go.brand.example",
        "go_x.brand.example",
        "a" * 64 + ".example",
        ("a" * 60 + ".") * 5 + "example",
        "x" * 5000,
        SHORT_DOMAIN,
        SHORT_DOMAIN.upper(),
        "go.brand.example\x00",
        "go brand.example",
        "\udcff.example",
        SHORT_DOMAIN + "\u3002",  # an ideographic full stop, mapped to "." by IDNA
        ("a" * 57 + ".") * 4 + "abcd.ex",  # 240 characters: its TXT name is over 253
    ],
)
async def test_names_that_are_no_usable_domain_are_refused(client: Client, name: str) -> None:
    """Ports, IP literals, URLs, bad labels, overlong names and SHORT_DOMAIN: 422."""
    if name.startswith("\udcff"):  # a lone surrogate: JSON can carry it, orjson cannot
        answer = await client.call("POST", "/v1/domains", raw=b'{"domain": "\\udcff.example"}')
    else:
        answer = await client.post("/v1/domains", {"domain": name})
    assert 400 <= answer.status < 500, answer.body
    assert answer.json["error"]["code"] in ("validation_failed", "invalid_json")


async def test_random_bytes_as_a_domain_never_make_a_server_error(client: Client) -> None:
    """Random bytes, as JSON or not, are a 4xx; never a 500."""
    rng = random.Random(25)
    for _ in range(40):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        text = blob.decode("latin-1")
        as_json = await client.call("POST", "/v1/domains", {"domain": text})
        assert 400 <= as_json.status < 500
        raw = await client.call("POST", "/v1/domains", raw=b'{"domain": "' + blob + b'"}')
        assert 400 <= raw.status < 500
        path = await raw_request(
            client.server,
            "GET",
            b"/v1/domains/" + blob.hex().encode() + b"%ff%00",
            [f"Authorization: Bearer {client.key}".encode()],
        )
        assert path.status == 404


async def test_verification_looks_the_txt_record_up(
    client: Client, dns: DnsServer, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """No record: 409 with what was found; the right value: 200 verified; audited."""
    name = fresh_domain()
    added = (await client.post("/v1/domains", {"domain": name})).json
    record = added["verification"]["name"]
    missing = await client.post(f"/v1/domains/{name}/verify")
    assert missing.status == 409
    assert missing.json["error"]["code"] == "verification_failed"
    assert missing.json["found"] == []
    dns.records[record] = ["v=spf1 -all", "x" * 600]
    wrong = await client.post(f"/v1/domains/{name}/verify")
    assert wrong.status == 409
    assert wrong.json["found"] == ["v=spf1 -all", "x" * 255]  # sorted, each cut
    assert wrong.json["expected"] == added["verification"]
    dns.records[record] = ["other", added["verification"]["value"]]
    verified = await client.post(f"/v1/domains/{name}/verify")
    assert verified.status == 200
    assert verified.json["verified"] is True
    assert verified.json["verified_at"] is not None
    assert record in dns.queries
    assert await audit_actions(db, tenant.account_id) == ["domain.added", "domain.verified"]


async def test_a_failed_dns_lookup_is_a_503(
    api_env: dict[str, str], db: asyncpg.Connection
) -> None:
    """A resolver that does not answer: 503 dns_unavailable, not a 409 and never a 500."""
    import aiohttp

    from shortlink.api.app import create_app
    from shortlink.api.config import ApiConfig
    from tests.infra import running

    env = {**api_env, "DNS_RESOLVERS": "127.0.0.1:9", "DNS_TIMEOUT_SECONDS": "0.5"}
    tenant = await new_tenant(db)
    async with running(create_app(ApiConfig.from_env(env))) as server:
        async with aiohttp.ClientSession() as session:
            client = Client(server, session, tenant.key)
            name = fresh_domain()
            await client.post("/v1/domains", {"domain": name})
            answer = await client.post(f"/v1/domains/{name}/verify")
    assert answer.status == 503
    assert answer.json["error"]["code"] == "dns_unavailable"


async def test_patch_sets_the_default_urls_and_documents(
    client: Client, dns: DnsServer, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Only a verified domain can be the default (409 before); one default per account;
    documents are kept as given; null removes; every change is audited."""
    unverified = fresh_domain()
    await client.post("/v1/domains", {"domain": unverified})
    refused = await client.call("PATCH", f"/v1/domains/{unverified}", {"default": True})
    assert refused.status == 409
    assert refused.json["error"]["code"] == "domain_not_verified"
    first = await verified_domain(client, dns)
    second = await verified_domain(client, dns)
    aasa = {"applinks": {"details": [{"appIDs": ["T.com.brand"], "components": [{"/": "*"}]}]}}
    links_doc = [{"relation": ["delegate_permission/common.handle_all_urls"]}]
    changed = await client.call(
        "PATCH",
        f"/v1/domains/{first}",
        {
            "default": True,
            "not_found_url": "https://brand.example/missing",
            "expired_url": "https://brand.example/over",
            "apple_app_site_association": aasa,
            "assetlinks": links_doc,
        },
    )
    assert changed.status == 200, changed.body
    assert changed.json["default"] is True
    assert changed.json["apple_app_site_association"] == aasa
    assert changed.json["assetlinks"] == links_doc
    moved = await client.call("PATCH", f"/v1/domains/{second}", {"default": True})
    assert moved.json["default"] is True
    assert (await client.get(f"/v1/domains/{first}")).json["default"] is False
    cleared = await client.call(
        "PATCH", f"/v1/domains/{first}", {"assetlinks": None, "not_found_url": None}
    )
    assert cleared.json["assetlinks"] is None
    assert cleared.json["not_found_url"] is None
    assert cleared.json["expired_url"] == "https://brand.example/over"
    actions = await audit_actions(db, tenant.account_id)
    assert actions.count("domain.changed") == 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("apple_app_site_association", "not an object"),
        ("apple_app_site_association", 42),
        ("assetlinks", True),
        ("assetlinks", [{"x": "y" * domains.MAX_DOCUMENT_BYTES}]),
        ("assetlinks", {"\u0000": {}}),
        ("apple_app_site_association", ["a\u0000b"]),
        ("not_found_url", "javascript:alert(1)"),
        ("not_found_url", f"https://{SHORT_DOMAIN}/x"),
        ("not_found_url", "https://e.x/" + "a" * 3000),
        ("expired_url", 7),
        ("default", "yes"),
        ("unknown", 1),
    ],
)
async def test_bad_settings_are_refused(
    client: Client, dns: DnsServer, field: str, value: object
) -> None:
    """Documents that are not objects or arrays or are too large, bad URLs: 422."""
    name = await verified_domain(client, dns)
    answer = await client.call("PATCH", f"/v1/domains/{name}", {field: value})
    assert answer.status == 422, answer.body
    assert answer.json["error"]["message"].startswith(field)


async def test_urls_pointing_at_the_domain_itself_are_refused(
    client: Client, dns: DnsServer
) -> None:
    """not_found_url or expired_url on the domain itself (any case, port, trailing dot) is a
    422 and changes nothing: an unknown token there would lead back to it, for ever."""
    name = await verified_domain(client, dns)
    for field in ("not_found_url", "expired_url"):
        for url in (f"https://{name}/missing", f"http://{name.upper()}.:8080/", f"https://{name}"):
            answer = await client.call("PATCH", f"/v1/domains/{name}", {field: url})
            assert answer.status == 422, (field, url)
            assert answer.json["error"]["details"][0]["field"] == field
        elsewhere = f"https://www.{name}/missing"
        assert (await client.call("PATCH", f"/v1/domains/{name}", {field: elsewhere})).status == 200
    shown = (await client.get(f"/v1/domains/{name}")).json
    assert shown["not_found_url"] == shown["expired_url"] == f"https://www.{name}/missing"


async def test_a_document_that_is_not_json_is_a_400(client: Client, dns: DnsServer) -> None:
    """A body that is not JSON at all is refused before any field is read."""
    name = await verified_domain(client, dns)
    answer = await client.call("PATCH", f"/v1/domains/{name}", raw=b'{"assetlinks": [1, 2,')
    assert answer.status == 400


async def test_links_and_messages_use_a_verified_domain_of_the_account(
    client: Client, dns: DnsServer, db: asyncpg.Connection
) -> None:
    """`domain` puts the links on it (short URLs, bodies, SMS length, status); an unverified
    or another account's domain is a 422; without `domain` the default is used."""
    name = await verified_domain(client, dns)
    made = await client.post("/v1/links", {"url": "https://shop.example/a", "domain": name.upper()})
    assert made.status == 201, made.body
    [link] = made.json["links"]
    assert link["short_url"] == f"https://{name}/{link['token']}"
    status = await client.get(f"/v1/links/{link['token']}")
    assert status.json["domain"] == name
    assert status.json["shortlink"] == link["short_url"]
    message = await client.post(
        "/v1/messages",
        {
            "to": ["+447700900123"],
            "body": "Hi https://shop.example/b",
            "mode": "first",
            "domain": name,
            "https": False,
        },
    )
    assert message.status == 201, message.body
    [sent] = message.json["messages"]
    token = sent["links"][0]["token"]
    assert sent["body"] == f"Hi {name}/{token}"
    assert sent["length"] == len(sent["body"])
    unverified = fresh_domain()
    await client.post("/v1/domains", {"domain": unverified})
    for bad in (unverified, "nowhere.example", "not a domain"):
        refused = await client.post("/v1/links", {"url": "https://shop.example/a", "domain": bad})
        assert refused.status == 422
        assert refused.json["error"]["details"][0]["field"] == "domain"
    other = await new_tenant(db)
    theirs = await client.post(
        "/v1/links", {"url": "https://shop.example/a", "domain": name}, key=other.key
    )
    assert theirs.status == 422
    plain = (await client.post("/v1/links", {"url": "https://shop.example/a"})).json
    assert plain["links"][0]["short_url"].startswith(f"https://{SHORT_DOMAIN}/")
    await client.call("PATCH", f"/v1/domains/{name}", {"default": True})
    default = (await client.post("/v1/links", {"url": "https://shop.example/a"})).json
    assert default["links"][0]["short_url"].startswith(f"https://{name}/")


async def test_a_removed_domain_is_gone(
    client: Client, dns: DnsServer, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """DELETE answers 204, then 404; links can no longer name it; audited."""
    name = await verified_domain(client, dns)
    assert (await client.call("DELETE", f"/v1/domains/{name}")).status == 204
    assert (await client.get(f"/v1/domains/{name}")).status == 404
    assert (await client.call("DELETE", f"/v1/domains/{name}")).status == 404
    refused = await client.post("/v1/links", {"url": "https://shop.example/a", "domain": name})
    assert refused.status == 422
    assert (await audit_actions(db, tenant.account_id))[-1] == "domain.removed"


async def test_the_clicks_of_a_campaign_show_each_links_domain(
    client: Client, dns: DnsServer, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A recorded click lists its link's branded domain; a SHORT_DOMAIN link's is null."""
    name = await verified_domain(client, dns)
    rows = []
    for domain in (name, None):
        made = await client.post(
            "/v1/links",
            {"url": "https://shop.example/", "client_identifier": "branded", "domain": domain},
        )
        [link] = made.json["links"]
        rows.append(await fetch_entry(db, link["token"]))
    await record(db, events(clicks([row for row in rows if row is not None])), batch_size=100)
    listed = await client.get("/v1/campaigns/branded/clicks")
    assert listed.status == 200
    by_link = {click["tracking_url_id"]: click["domain"] for click in listed.json["clicks"]}
    assert by_link == {rows[0].id: name, rows[1].id: None}  # type: ignore[union-attr]


async def test_a_name_ending_in_a_full_stop_idna_maps_is_stored_without_it(
    client: Client,
) -> None:
    """go.brand.example\u3002 is go.brand.example: one row, its own name, no trailing dot."""
    name = f"fs{random.randrange(10**9)}.brand.example"
    answer = await client.post("/v1/domains", {"domain": name + "\uff0e"})
    assert answer.status == 201, answer.body
    assert answer.json["domain"] == name
    assert (await client.post("/v1/domains", {"domain": name})).status == 409


async def test_two_defaults_set_at_once_leave_one_and_no_server_error(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Concurrent PATCHes making two domains the default: both answer 200, one is default."""
    names = [f"d{i}{random.randrange(10**9)}.brand.example" for i in range(2)]
    for name in names:
        await domains.add(db, tenant.account_id, name, verified=True)
    answers = await asyncio.gather(
        *(client.call("PATCH", f"/v1/domains/{name}", {"default": True}) for name in names)
    )
    assert [answer.status for answer in answers] == [200, 200]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM domains WHERE account_id = $1 AND is_default", tenant.account_id
        )
        == 1
    )
