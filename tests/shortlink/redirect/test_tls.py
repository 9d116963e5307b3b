"""TLS for branded domains: Caddy's on-demand TLS in front of the redirect server, asking our
TLS ask endpoint (shortlink.redirect.tlsask) before it issues a certificate.

Caddy (Debian's package; `make test` installs it) runs on random unprivileged ports with
a generated Caddyfile and its internal CA; the client resolves every name to 127.0.0.1
and trusts that CA's root only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from shortlink import domains
from shortlink.redirect.app import create_app, make_handler
from shortlink.redirect.config import RedirectConfig
from tests.infra import RunningServer, running, wait_until
from tests.shortlink.redirect.test_app import TARGET
from tests.shortlink.redirect.test_domains import fresh_domain, make_link, served_everywhere

CADDY = shutil.which("caddy") or "/usr/bin/caddy"
CADDYFILE = """\
{{
\tadmin off
\thttp_port {http}
\thttps_port {https}
\tstorage file_system {storage}
\tlocal_certs
\tskip_install_trust
\ton_demand_tls {{
\t\task http://127.0.0.1:{ask}/tls-ask
\t}}
}}

https:// {{
\ttls internal {{
\t\ton_demand
\t}}
\treverse_proxy 127.0.0.1:{upstream}
}}
"""


class Loopback(AbstractResolver):
    """Every name is 127.0.0.1 (the client side of "go.brand.example points at us")."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Caddy:
    https_port: int
    root: Path  # the internal CA's root certificate


@contextlib.asynccontextmanager
async def caddy(tmp: Path, upstream: int, ask: int) -> AsyncIterator[Caddy]:
    """Caddy on random ports in front of `upstream`, asking `ask`; stopped (by its pid)."""
    https = free_port()
    storage = tmp / "caddy"
    config = tmp / "Caddyfile"
    config.write_text(
        CADDYFILE.format(http=free_port(), https=https, storage=storage, ask=ask, upstream=upstream)
    )
    env = {**os.environ, "HOME": str(tmp), "XDG_DATA_HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp)}
    log = (tmp / "caddy.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        CADDY, "run", "--config", str(config), "--adapter", "caddyfile",
        stdout=log, stderr=log, env=env,
    )  # fmt: skip
    root = storage / "pki" / "authorities" / "local" / "root.crt"
    try:

        async def listening() -> bool:
            if process.returncode is not None:
                raise AssertionError((tmp / "caddy.log").read_text()[-3000:])
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", https)
            except OSError:
                return False
            writer.close()
            return root.exists()

        await wait_until(listening, within=30.0, step=0.1, what="caddy listening")
        yield Caddy(https, root)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


@pytest.fixture
async def ask_server(redirect_env: dict[str, str]) -> AsyncIterator[tuple[RunningServer, int]]:
    port = free_port()
    env = {**redirect_env, "TLS_ASK_PORT": str(port)}
    async with running(create_app(RedirectConfig.from_env(env)), make_handler) as server:
        yield server, port


async def test_caddy_serves_a_verified_domain_over_https_and_refuses_others(
    ask_server: tuple[RunningServer, int],
    db: asyncpg.Connection,
    account_id: int,
    tmp_path: Path,
) -> None:
    """https://<verified domain>/<token> through Caddy is our 302 with a certificate from
    its internal CA; an unverified host gets no certificate (the handshake fails)."""
    server, ask_port = ask_server
    name = fresh_domain()
    await domains.add(db, account_id, name, verified=True)
    unverified = fresh_domain()
    await domains.add(db, account_id, unverified)
    await served_everywhere(name, server)
    token = await make_link(db, account_id, domain=name)
    async with caddy(tmp_path, server.port, ask_port) as terminator:
        trust = ssl.create_default_context(cafile=str(terminator.root))
        connector = aiohttp.TCPConnector(resolver=Loopback(), ssl=trust)
        async with aiohttp.ClientSession(connector=connector) as session:
            url = f"https://{name}:{terminator.https_port}/{token}"
            async with session.get(url, allow_redirects=False) as response:
                assert response.status == 302
                assert response.headers["Location"] == TARGET
            for refused in (unverified, "random.example"):
                with pytest.raises(aiohttp.ClientConnectorError):
                    async with session.get(
                        f"https://{refused}:{terminator.https_port}/{token}",
                        allow_redirects=False,
                    ):
                        pass
