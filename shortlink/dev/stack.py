"""`make run`: the whole stack on one machine, with embedded servers by default.

Starts what the environment does not provide (the embedded PostgreSQL, the tansu
broker), applies migrations, makes sure a demo account and demo links exist,
starts the services as child processes, prints what to try, and on Ctrl-C or
SIGTERM stops everything it started, in order: services first (they flush their
clicks into the broker), then the broker, then PostgreSQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from shortlink import accounts, endpoints, schema
from shortlink.api.config import DashboardConfig
from shortlink.api.dashboard.sessions import Grant, dashboard_link
from shortlink.config import ServiceConfig
from shortlink.dev import embedded
from shortlink.dev.config import StackConfig
from shortlink.kafka import ensure_topic
from shortlink.links import NewLink, create_links
from shortlink.serve import exit_with_parent

log = logging.getLogger(__name__)

DEMO_ACCOUNT = "demo"
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"


@dataclass(frozen=True)
class Demo:
    account_id: int
    token: str
    unsafe_token: str
    api_key: str
    key_id: int


async def prepare_database(database_url: str, sink_url: str) -> Demo:
    """Apply migrations; make sure the demo account, links and endpoint exist."""
    conn = await asyncpg.connect(database_url)
    try:
        await schema.migrate(conn)
        account_id = await conn.fetchval(
            "SELECT id FROM accounts WHERE name = $1 ORDER BY id LIMIT 1", DEMO_ACCOUNT
        )
        if account_id is None:
            account_id = (await accounts.create_account(conn, DEMO_ACCOUNT)).account_id
        token = await _demo_link(conn, account_id, "demo-link", unsafe=False)
        unsafe_token = await _demo_link(conn, account_id, "demo-unsafe", unsafe=True)
        if await endpoints.get_endpoint(conn, account_id) is None:
            await endpoints.set_endpoint(
                conn,
                account_id,
                url=sink_url,
                format="json",
                mode="every",
                secret=None,
                enabled=True,
                allow_private=True,
            )
        # Keys are stored hashed, so the demo key is replaced on every start to be shown.
        api_key = await accounts.rotate_key(conn, account_id)
        key_id = await accounts.current_key(conn, account_id)
        if api_key is None or key_id is None:  # pragma: no cover - found or made above
            raise RuntimeError("the demo account vanished")
        return Demo(account_id, token, unsafe_token, api_key, key_id)
    finally:
        await conn.close()


async def _demo_link(conn: asyncpg.Connection, account_id: int, ref: str, *, unsafe: bool) -> str:
    token: str | None = await conn.fetchval(
        """
        SELECT token FROM links
        WHERE account_id = $1 AND client_ref = $2 AND disabled_at IS NULL AND expires_at > now()
        ORDER BY id DESC LIMIT 1
        """,
        account_id,
        ref,
    )
    if token is None:
        [link] = await create_links(
            conn,
            account_id,
            [
                NewLink(
                    target_url="https://example.com/",
                    phone_number="447700900000",
                    client_ref=ref,
                    client_identifier="demo-campaign",
                    unsafe=unsafe,
                )
            ],
        )
        token = link.token
    return token


def dashboard_secret(data_dir: Path) -> str:
    """The data folder's dashboard signing secret, made on first use (owner-only file)."""
    path = data_dir / "dashboard-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


class Stack:
    """The processes `make run` started, stopped in reverse order."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.broker: embedded.Broker | None = None

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> None:
        process = subprocess.Popen(
            argv,
            env=dict(env),
            # Own session: Ctrl-C reaches only the supervisor, which stops
            # children in order instead of all at once; and if the supervisor
            # itself is killed, the children get SIGTERM instead of living on.
            start_new_session=True,
            preexec_fn=functools.partial(exit_with_parent, os.getpid()),
        )
        self.children.append((name, process))

    def crashed(self) -> str | None:
        for name, process in self.children:
            if process.poll() is not None:
                return f"{name} exited with {process.returncode}"
        return None

    def stop(self) -> None:
        for _, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in reversed(self.children):
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                log.error("did not stop in time; killing it", extra={"process": name})
                process.kill()
                process.wait()
        if self.broker is not None:
            self.broker.stop()


def _wait_until_healthy(url: str, stack: Stack, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        problem = stack.crashed()
        if problem:
            raise RuntimeError(problem)
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own URL
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def run_stack(env: Mapping[str, str]) -> int:
    """Run everything until Ctrl-C; return the exit code."""
    config = StackConfig.from_env(env)
    service = config.service
    redirect_port = config.redirect_port
    redirect_url = f"http://127.0.0.1:{redirect_port}"
    forwarder_port = config.forwarder_port
    api_port = config.api_port
    api_url = f"http://127.0.0.1:{api_port}"
    sink_port = config.demo_endpoint_port
    metrics_ports = (config.redirect_metrics_port, config.api_metrics_port)
    stack = Stack()
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        database_url = service.database_url or embedded.ensure_postgres(service.data_dir)
        bootstrap = service.kafka_bootstrap_servers
        local_broker: dict[str, str] = {}
        if bootstrap is None:
            bootstrap, stack.broker = embedded.ensure_broker(service.data_dir)
            local_broker["KAFKA_SESSION_TIMEOUT_MS"] = str(embedded.TANSU_SESSION_TIMEOUT_MS)
        asyncio.run(ensure_topic(bootstrap, service.click_topic, service.click_topic_partitions))
        sink_url = f"http://127.0.0.1:{sink_port}/hook"
        demo = asyncio.run(prepare_database(database_url, sink_url))
        child_env = {
            **local_broker,  # a setting of the user's own wins
            **env,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "SHORTLINK_DATA_DIR": str(service.data_dir),
            # The demo endpoint and any a user sets up locally live on 127.0.0.1.
            "ALLOW_PRIVATE_ENDPOINTS": "true",
        }
        stack.spawn(
            "demo endpoint",
            [sys.executable, "-m", "shortlink.dev.demosink", "--port", str(sink_port)],
            child_env,
        )
        api_env = {
            **child_env,
            "DASHBOARD_ENABLED": config.dashboard_enabled,
            "DASHBOARD_SECRET": config.dashboard_secret or dashboard_secret(service.data_dir),
        }
        stack.spawn(
            "api",
            [sys.executable, "-m", "shortlink.cli", "api", "--port", str(api_port)],
            {
                **api_env,
                # Local short URLs point at the local redirect server, over plain http.
                "SHORT_DOMAIN": config.short_domain,
                "SHORT_URL_SCHEME": config.short_url_scheme,
            },
        )
        stack.spawn(
            "forwarder",
            [sys.executable, "-m", "forwarder.cli", "run", "--port", str(forwarder_port)],
            child_env,
        )
        stack.spawn(
            "redirect",
            [sys.executable, "-m", "shortlink.cli", "redirect", "--port", str(redirect_port)],
            # Locally a curl on this machine may play the load balancer: its
            # X-Forwarded-For gives the client IP the forwarder places.
            {**child_env, "TRUSTED_PROXIES": config.trusted_proxies},
        )
        _wait_until_healthy(f"{redirect_url}/healthz", stack)
        _wait_until_healthy(f"http://127.0.0.1:{forwarder_port}/healthz", stack)
        _wait_until_healthy(f"{api_url}/healthz", stack)
        dashboard = DashboardConfig.from_env({**api_env, "API_PORT": str(api_port)})
        grant = Grant(demo.account_id, demo.key_id, None, int(time.time()) + 86_400)
        share = dashboard_link(dashboard, grant)
        _print_banner(
            dataclasses.replace(service, kafka_bootstrap_servers=bootstrap),
            demo,
            share,
            redirect_url,
            api_url,
            forwarder_port,
            sink_url,
            metrics_ports,
        )
        while not stopping:
            problem = stack.crashed()
            if problem:
                log.error("a service stopped; shutting down", extra={"problem": problem})
                return 1
            time.sleep(0.3)
        return 0
    finally:
        sys.stdout.write("\nstopping...\n")
        stack.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.stdout.write("stopped.\n")


def _print_banner(
    service: ServiceConfig,
    demo: Demo,
    share: str,
    redirect_url: str,
    api_url: str,
    forwarder_port: int,
    sink_url: str,
    metrics_ports: tuple[int, int],
) -> None:
    database = (
        f"embedded, data in {service.data_dir / 'postgres'}"
        if service.database_url is None
        else "from DATABASE_URL"
    )
    lines = [
        "",
        "shortlink is running",
        f"  redirect server   {redirect_url}",
        f"  API               {api_url}  (contract: {api_url}/v1/openapi.json, "
        f"docs: {api_url}/v1/docs)",
        f"  dashboard         {api_url}/dashboard/  (sign in with the API key below)",
        f"    as the demo account, read-only, for 24 h (or until its key is rotated): {share}",
        f"  PostgreSQL        {database}",
        f"  Kafka             {service.kafka_bootstrap_servers} (topic {service.click_topic})",
        f"  forwarder         health on http://127.0.0.1:{forwarder_port}/readyz",
        f"  demo endpoint     {sink_url} (prints what it receives)",
        "  metrics           "
        + ", ".join(
            [f"http://127.0.0.1:{port}/metrics" for port in metrics_ports if port]
            + [f"http://127.0.0.1:{forwarder_port}/metrics"]
        ),
        "",
        "Try (curl's own User-Agent counts as a robot, so these say they are a phone):",
        f"  curl -i -A '{PHONE}' {redirect_url}/{demo.token}    # 302, forwarded",
        f"  curl -I -A '{PHONE}' {redirect_url}/{demo.token}    # HEAD: a preview",
        f"  curl -i -A '{PHONE}' -H 'X-Forwarded-For: 145.97.39.155' {redirect_url}/{demo.token}"
        "    # as if through a proxy: the click is placed in NL",
        f"  curl -i {redirect_url}/{demo.unsafe_token}    # warning page of an unsafe link",
        f"  curl -i {redirect_url}/NoSuch1    # 404",
        f"  curl -s {redirect_url}/readyz    # database and broker reachable?",
        "The API, as the demo account (this key was made for this run):",
        f"  export KEY={demo.api_key}",
        f'  curl -s -X POST {api_url}/v1/links -H "Authorization: Bearer $KEY" '
        '-H \'Content-Type: application/json\' -d \'{"url": "https://example.com/offer", '
        '"recipients": [{"phone_number": "+44 7700 900123", "client_ref": "m1"}], '
        '"client_identifier": "spring"}\'',
        f'  curl -s -X POST {api_url}/v1/messages -H "Authorization: Bearer $KEY" '
        '-H \'Content-Type: application/json\' -d \'{"to": ["+447700900123"], '
        '"body": "Hi! Offer: #track(\\"https://example.com/offer\\") today", '
        '"client_identifier": "spring"}\'',
        f'  curl -s {api_url}/v1/campaigns/demo-campaign/stats -H "Authorization: Bearer $KEY"',
        "In another terminal:",
        "  .venv/bin/shortlink account create --name acme",
        f"  DASHBOARD_SECRET=$(cat {service.data_dir / 'dashboard-secret'}) "
        f".venv/bin/shortlink dashboard-link --account {demo.account_id} "
        "--campaign demo-campaign --hours 24",
        f"  .venv/bin/shortlink deliveries list --account {demo.account_id}",
        "",
        "A tap on a demo link is forwarded to the demo endpoint about a second later",
        "(JSON, as the customer's endpoint would receive it); its line appears below.",
        "",
        "Press Ctrl-C to stop everything.",
        "",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
