"""The redirect server answers by Host: branded domains, their not-found place, app-link files,
kept in step on every worker; the TLS ask endpoint; hostile Host headers."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest

from shortlink import domains
from shortlink.links import NewLink, create_links
from shortlink.redirect.app import create_app, make_handler
from shortlink.redirect.config import RedirectConfig
from shortlink.redirect.domains import SHORT as DOMAIN_SHORT
from shortlink.redirect.domains import BrandedHosts, Served, normal_host
from shortlink.redirect.listener import LISTENER
from shortlink.redirect.tlsask import PATH
from tests.infra import RunningServer, exchange, running, unique_name, wait_until
from tests.shortlink.redirect.test_app import TARGET, get

SHORT = "sl.test"


def fresh_domain() -> str:
    return f"{unique_name('go').replace('_', '-').lower()}.brand.example"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def branded(db: asyncpg.Connection, account_id: int, **settings: object) -> str:
    """A verified domain of the account, with `settings` (shortlink.domains.update)."""
    name = fresh_domain()
    await domains.add(db, account_id, name, verified=True)
    if settings:
        await domains.update(db, account_id, name, **settings)  # type: ignore[arg-type]
    return name


async def make_link(
    db: asyncpg.Connection, account_id: int, *, domain: str | None = None, **fields: object
) -> str:
    spec = {"target_url": TARGET, "phone_number": "447700900123", **fields}
    [link] = await create_links(db, account_id, [NewLink(**spec)], domain=domain)  # type: ignore[arg-type]
    return link.token


async def served_everywhere(
    name: str, *servers: RunningServer, db: asyncpg.Connection | None = None
) -> None:
    """Until every server serves the domain; with `db`, as its row says now (a domain added
    and then changed is two notifications: the first alone must not end the wait)."""
    expected = None
    if db is not None:
        [row] = await domains.served(db, [name])
        expected = Served.of(row)
    for server in servers:
        hosts = server.app[LISTENER].hosts
        await wait_until(
            lambda hosts=hosts: (
                name in hosts.domains and (expected is None or hosts.domains[name] == expected)
            ),
            within=1.0,
            step=0.01,
            what=name,
        )


async def tap(server: RunningServer, token: str, host: str) -> aiohttp.ClientResponse:
    return await get(server, f"/{token}", headers={"Host": host})


async def test_a_branded_link_answers_on_its_own_domain_only(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """On its domain (any case, any port, a trailing dot) 302; on SHORT_DOMAIN, an address or
    another branded domain a 404 with the very bytes an unknown token gets."""
    name = await branded(db, account_id)
    other = await branded(db, account_id)
    await served_everywhere(other, redirect_server, db=db)
    token = await make_link(db, account_id, domain=name)
    for host in (name, name.upper(), f"{name}:8443", f"{name}."):
        response = await tap(redirect_server, token, host)
        assert response.status == 302, host
        assert response.headers["Location"] == TARGET
    unknown = await tap(redirect_server, "ZZZZZZZZ", SHORT)
    unknown_body = await unknown.read()
    for host in (SHORT, "127.0.0.1", other, f"x.{name}"):
        response = await tap(redirect_server, token, host)
        assert response.status == 404, host
        assert await response.read() == unknown_body
        assert dict(response.headers).keys() == dict(unknown.headers).keys()


async def test_a_short_domain_link_answers_on_short_domain_aliases_and_addresses_only(
    redirect_env: dict[str, str], db: asyncpg.Connection, account_id: int
) -> None:
    """A SHORT_DOMAIN link answers on SHORT_DOMAIN (any case, any port), its aliases, an
    address and without a Host; on a stranger's name or a branded domain it is a 404."""
    name = await branded(db, account_id)
    env = {
        **redirect_env,
        "SHORT_DOMAIN": "SL.test:8080",
        "SHORT_DOMAIN_ALIASES": "redirect.svc, X.internal",
    }
    token = await make_link(db, account_id)
    async with running(create_app(RedirectConfig.from_env(env)), make_handler) as server:
        await served_everywhere(name, server, db=db)
        for host in (
            SHORT,
            "SL.TEST:443",
            f"{SHORT}.",
            "redirect.svc",
            "x.internal:80",
            "127.0.0.1:8080",
            "[::1]:8080",
            "10.0.0.7",
        ):
            assert (await tap(server, token, host)).status == 302, host
        statuses = await exchange(server, f"GET /{token} HTTP/1.0\r\n\r\n".encode())
        assert statuses == [302]
        for host in (
            "anything.example",
            f"x.{SHORT}",
            "sl.test.evil.example",
            name,
            "127.0.0.1.nip.io",
        ):
            assert (await tap(server, token, host)).status == 404, host


async def test_an_internationalised_short_domain_answers_on_its_idna_host(
    redirect_env: dict[str, str], db: asyncpg.Connection, account_id: int
) -> None:
    """SHORT_DOMAIN written in Unicode answers on the IDNA Host browsers send, and aliases
    likewise; localhost and an empty port are SHORT_DOMAIN's too."""
    env = {**redirect_env, "SHORT_DOMAIN": "Bücher.example", "SHORT_DOMAIN_ALIASES": "kürz.example"}
    token = await make_link(db, account_id)
    async with running(create_app(RedirectConfig.from_env(env)), make_handler) as server:
        for host in (
            "xn--bcher-kva.example",
            "XN--BCHER-KVA.example:",
            "xn--krz-hoa.example",
            "localhost:8080",
        ):
            assert (await tap(server, token, host)).status == 302, host
        assert (await tap(server, token, "bucher.example")).status == 404


async def test_without_short_domain_a_short_domain_link_answers_on_any_unbranded_host(
    redirect_env: dict[str, str], db: asyncpg.Connection, account_id: int
) -> None:
    """With SHORT_DOMAIN unset the worker cannot tell its name: any host but a branded one."""
    name = await branded(db, account_id)
    env = {key: value for key, value in redirect_env.items() if key != "SHORT_DOMAIN"}
    token = await make_link(db, account_id)
    async with running(create_app(RedirectConfig.from_env(env)), make_handler) as server:
        await served_everywhere(name, server, db=db)
        for host in (SHORT, "anything.example", "127.0.0.1"):
            assert (await tap(server, token, host)).status == 302, host
        assert (await tap(server, token, name)).status == 404


async def test_a_token_on_the_wrong_host_is_counted_as_a_scan(
    redirect_env: dict[str, str], db: asyncpg.Connection, account_id: int
) -> None:
    """The scanner guard counts a known token on the wrong host like an unknown token: 429."""
    config = RedirectConfig.from_env({**redirect_env, "SCAN_LIMIT_PER_MINUTE": "3"})
    name = await branded(db, account_id)
    token = await make_link(db, account_id, domain=name)
    async with running(create_app(config), make_handler) as server:
        statuses = [(await tap(server, token, SHORT)).status for _ in range(5)]
        assert statuses == [404, 404, 404, 429, 429]


async def test_an_unknown_token_on_a_branded_domain_goes_to_its_not_found_url(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """302 to not_found_url for an unknown token (and a token of another host) on the domain;
    the 404 page elsewhere, and on a domain without one."""
    name = await branded(db, account_id, not_found_url="https://brand.example/missing")
    bare = await branded(db, account_id)
    await served_everywhere(name, redirect_server, db=db)
    await served_everywhere(bare, redirect_server, db=db)
    plain = await make_link(db, account_id)
    for token in ("ZZZZZZZZ", plain):
        response = await tap(redirect_server, token, name)
        assert response.status == 302
        assert response.headers["Location"] == "https://brand.example/missing"
    assert (await tap(redirect_server, "ZZZZZZZZ", bare)).status == 404
    assert (await tap(redirect_server, "ZZZZZZZZ", SHORT)).status == 404


async def test_an_expired_link_goes_to_its_domains_expired_url(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """Expired: the link's own place first, then its domain's expired_url."""
    name = await branded(db, account_id, expired_url="https://brand.example/over")
    await served_everywhere(name, redirect_server, db=db)
    past = datetime.now(UTC) - timedelta(seconds=1)
    token = await make_link(db, account_id, domain=name, expires_at=past)
    response = await tap(redirect_server, token, name)
    assert response.headers["Location"] == "https://brand.example/over"
    own = await make_link(db, account_id, domain=name, expires_at=past, expired_url="https://o.x/")
    assert (await tap(redirect_server, own, name)).headers["Location"] == "https://o.x/"


async def test_app_link_files_are_served_on_a_branded_host(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """apple-app-site-association and assetlinks.json as application/json on the domain;
    404 where none is set and on hosts that are not branded."""
    aasa = '{"applinks":{"details":[{"appIDs":["T.com.brand"],"components":[{"/":"*"}]}]}}'
    name = await branded(db, account_id, apple_app_site_association=aasa)
    await served_everywhere(name, redirect_server, db=db)
    apple = await get(
        redirect_server, "/.well-known/apple-app-site-association", headers={"Host": name}
    )
    assert apple.status == 200
    assert apple.headers["Content-Type"] == "application/json"
    assert await apple.read() == aasa.encode()
    android = await get(redirect_server, "/.well-known/assetlinks.json", headers={"Host": name})
    assert android.status == 404
    elsewhere = await get(
        redirect_server, "/.well-known/apple-app-site-association", headers={"Host": SHORT}
    )
    assert elsewhere.status == 404


async def test_domain_changes_reach_every_worker_within_a_second(
    redirect_server: RunningServer,
    cold_redirect_server: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
) -> None:
    """Verified, changed and removed, a domain is what both workers answer within 1 s."""
    workers = (redirect_server, cold_redirect_server)
    name = fresh_domain()
    await domains.add(db, account_id, name)
    # A link on a domain that is not verified (links are made only on verified ones: it is
    # verified for the moment of the insert, in a transaction that ends unverified).
    async with db.transaction():
        await db.execute("UPDATE domains SET verified = true WHERE name = $1", name)
        token = await make_link(db, account_id, domain=name)
        await db.execute("UPDATE domains SET verified = false WHERE name = $1", name)

    async def answers(status: int, location: str | None = None) -> bool:
        for worker in workers:
            response = await tap(worker, token, name)
            if response.status != status or response.headers.get("Location") != location:
                return False
        return True

    async def missing_goes_to(location: str | None) -> bool:
        for worker in workers:
            response = await tap(worker, "ZZZZZZZZ", name)
            if response.headers.get("Location") != location:
                return False
        return True

    assert await answers(404)  # unverified: not served
    await domains.mark_verified(db, account_id, name)
    await wait_until(lambda: answers(302, TARGET), within=1.0, step=0.02, what="verified")
    for url in ("https://brand.example/a", "https://brand.example/b", None):
        await domains.update(db, account_id, name, not_found_url=url)
        await wait_until(lambda url=url: missing_goes_to(url), within=1.0, step=0.02, what=f"{url}")
    assert await domains.remove(db, account_id, name)
    await wait_until(lambda: answers(404), within=1.0, step=0.02, what="removed")


async def test_a_domain_moved_to_another_account_does_not_serve_the_old_links(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """Links answer only while their own account holds the domain."""
    name = await branded(db, account_id)
    token = await make_link(db, account_id, domain=name)
    await served_everywhere(name, redirect_server, db=db)
    assert (await tap(redirect_server, token, name)).status == 302
    await domains.remove(db, account_id, name)
    other = await db.fetchval("INSERT INTO accounts (name) VALUES ('other') RETURNING id")
    await domains.add(db, other, name, verified=True)
    hosts = redirect_server.app[LISTENER].hosts

    async def moved() -> bool:
        served = hosts.domains.get(name)
        return served is not None and served.account_id == other

    await wait_until(moved, within=1.0, step=0.01, what="moved")
    assert (await tap(redirect_server, token, name)).status == 404


HOSTILE_HOSTS = [
    b"",
    b"\xff\xfe\x00",
    b"GO.BRAND.EXAMPLE:99999999999999999999",
    b"[::1]",
    b"[::1]:80",
    b"xn--",
    b"\xe2\x80\xae.example",
    b"a" * 7000,
    b":",
    b"...",
    b"%00",
]


async def test_hostile_host_headers_never_make_a_server_error(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """Random bytes, huge, odd-encoded Host headers: answered (a 404 for a name not served,
    4xx for junk), never a 5xx; the memo stays bounded."""
    name = await branded(db, account_id)
    await served_everywhere(name, redirect_server, db=db)
    plain = await make_link(db, account_id)
    token = await make_link(db, account_id, domain=name)
    rng = random.Random(25)
    hosts = [*HOSTILE_HOSTS]
    hosts += [
        bytes(rng.randrange(32, 256) for _ in range(rng.randrange(1, 200))) for _ in range(30)
    ]
    for host in hosts:
        for path in (plain, token, ".well-known/assetlinks.json", "ZZZZZZZZ"):
            request = b"GET /" + path.encode() + b" HTTP/1.1\r\nHost: " + host
            statuses = await exchange(redirect_server, request + b"\r\nConnection: close\r\n\r\n")
            assert statuses, host
            assert all(status < 500 for status in statuses), (host, statuses)
            if path == token:
                assert statuses[0] in (400, 404, 429), host
    many = BrandedHosts()
    for index in range(10_000):
        many.served(f"h{index}.example")
    assert len(many._memo) <= 4096


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("GO.Brand.Example:8443", "go.brand.example"),
        ("go.brand.example.", "go.brand.example"),
        ("[::1]", "[::1]"),
        ("[::1]:80", "[::1]"),
        ("tx1.in:", "tx1.in"),
        ("host:port", "host:port"),
    ],
)
def test_a_host_header_is_compared_without_case_port_or_trailing_dot(
    raw: str, expected: str
) -> None:
    """normal_host drops the port and the trailing dot and lowers the case."""
    assert normal_host(raw) == expected


@pytest.fixture
async def ask_server(
    redirect_env: dict[str, str],
) -> AsyncIterator[tuple[RunningServer, int]]:
    port = free_port()
    env = {**redirect_env, "TLS_ASK_PORT": str(port), "SHORT_DOMAIN": "SL.test"}
    async with running(create_app(RedirectConfig.from_env(env)), make_handler) as server:
        yield server, port


async def test_the_tls_ask_endpoint_allows_only_served_domains(
    ask_server: tuple[RunningServer, int], db: asyncpg.Connection, account_id: int
) -> None:
    """200 for SHORT_DOMAIN and verified domains; 404 for unverified, unknown, hostile names;
    on its own loopback listener, not on the redirect port."""
    server, port = ask_server
    name = await branded(db, account_id)
    unverified = fresh_domain()
    await domains.add(db, account_id, unverified)
    await served_everywhere(name, server)
    async with aiohttp.ClientSession() as session:

        async def ask(domain: str) -> int:
            url = f"http://127.0.0.1:{port}{PATH}"
            async with session.get(url, params={"domain": domain}) as response:
                return response.status

        assert await ask(name) == 200
        assert await ask(name.upper()) == 200
        assert await ask("sl.test") == 200
        for refused in (unverified, "nowhere.example", "127.0.0.1", "", "\x00", "x" * 5000):
            assert await ask(refused) == 404, refused
        async with session.get(f"{server.url}{PATH}", params={"domain": name}) as response:
            assert response.status == 404  # the public port does not answer it


def test_long_host_headers_are_not_kept_in_the_memo() -> None:
    """A Host header longer than any branded name is no branded domain, and is not memoised
    (8 KiB hosts held ~45 MB in a worker's memo)."""
    hosts = BrandedHosts(frozenset({SHORT}))
    for i in range(100):
        assert hosts.served(f"{i}" + "h" * 8000) is None
    assert hosts.served("x" * 261) is None
    assert len(hosts._memo) == 0
    assert BrandedHosts().served("x" * 261) is DOMAIN_SHORT  # SHORT_DOMAIN unset: any host
