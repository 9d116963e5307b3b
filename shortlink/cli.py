"""The `shortlink` command: servers, migrations, accounts, links, and the local stack.

With no DATABASE_URL, every command uses the embedded PostgreSQL under the data
folder (starting it if needed, stopping it at exit unless another process still
uses it); with no KAFKA_BOOTSTRAP_SERVERS, the servers use the development broker
on 127.0.0.1:19092 (started if nothing listens there).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import orjson

from shortlink import (
    accounts,
    audit,
    deliveries,
    domains,
    endpoints,
    logs,
    purge,
    schema,
    validation,
)
from shortlink.api.config import ApiConfig, DashboardConfig, PublicAddresses
from shortlink.config import ServiceConfig
from shortlink.db import require_database_url
from shortlink.dev.embedded import resolve_service
from shortlink.exceptions import STARTUP_ERRORS, EndpointError, InvalidInput, ShortlinkError
from shortlink.kafka import ensure_topic
from shortlink.links import NewLink, create_links
from shortlink.metrics import serve_worker_metrics
from shortlink.redirect.config import RedirectConfig
from shortlink.serve import EXIT_CONFIG, run_in_process, run_workers
from shortlink.timestamps import rfc3339


async def _with_connection(
    service: ServiceConfig, action: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> Any:
    conn = await asyncpg.connect(require_database_url(service))
    try:
        return await action(conn)
    finally:
        await conn.close()


def _print_json(value: object) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


# -- commands ------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, env: dict[str, str]) -> int:
    service = resolve_service(ServiceConfig.from_env(env), kafka=False)

    async def action(conn: asyncpg.Connection) -> list[schema.Migration]:
        return await schema.migrate(conn)

    applied = asyncio.run(_with_connection(service, action))
    created = False
    if service.kafka_bootstrap_servers is not None:
        created = asyncio.run(
            ensure_topic(
                service.kafka_bootstrap_servers,
                service.click_topic,
                service.click_topic_partitions,
            )
        )
    _print_json(
        {
            "applied": [f"{m.version:04d}_{m.name}" for m in applied],
            "schema_version": schema.expected_version(),
            "click_topic_created": created,
        }
    )
    return 0


def _redirect_worker(config: RedirectConfig, index: int) -> int:
    from shortlink.redirect.app import create_app, make_handler
    from shortlink.serve import serve

    logs.configure(config.service.log_level)
    return run_in_process(
        lambda: serve(
            create_app(config, worker_index=index),
            host=config.host,
            port=config.port,
            shutdown_timeout=config.shutdown_timeout,
            make_handler=make_handler,
        )
    )


ServerConfig = TypeVar("ServerConfig", RedirectConfig, ApiConfig)


def _serve_command(
    config: ServerConfig,
    args: argparse.Namespace,
    *,
    kafka: bool,
    worker: Callable[[ServerConfig, int], int],
    metrics_setting: str,
    name: str,
) -> int:
    """Apply the command line to a server's configuration, serve its metrics and run
    its workers (in this process when there is one)."""
    config = dataclasses.replace(
        config,
        service=resolve_service(config.service, kafka=kafka),
        host=args.host or config.host,
        port=config.port if args.port is None else args.port,
        workers=args.workers or config.workers,
    )
    serve_worker_metrics(config.service.metrics_host, config.metrics_port, metrics_setting)
    if config.workers == 1:
        return worker(config, 0)
    return run_workers(functools.partial(worker, config), config.workers, name)


def cmd_redirect(args: argparse.Namespace, env: dict[str, str]) -> int:
    return _serve_command(
        RedirectConfig.from_env(env),
        args,
        kafka=True,
        worker=_redirect_worker,
        metrics_setting="REDIRECT_METRICS_PORT",
        name="redirect",
    )


def _api_worker(config: ApiConfig, index: int) -> int:
    from shortlink.api.app import create_app
    from shortlink.serve import serve

    logs.configure(config.service.log_level)
    return run_in_process(
        lambda: serve(
            create_app(config, worker_index=index),
            host=config.host,
            port=config.port,
            shutdown_timeout=config.shutdown_timeout,
        )
    )


def cmd_api(args: argparse.Namespace, env: dict[str, str]) -> int:
    return _serve_command(
        ApiConfig.from_env(env),
        args,
        kafka=False,
        worker=_api_worker,
        metrics_setting="API_METRICS_PORT",
        name="api",
    )


def cmd_account(args: argparse.Namespace, env: dict[str, str]) -> int:
    service = resolve_service(ServiceConfig.from_env(env), kafka=False)
    if args.account_command == "rate-limit" and not (
        args.default or (args.per_minute is not None and 1 <= args.per_minute <= 1_000_000)
    ):
        sys.stderr.write("shortlink: give --per-minute from 1 to 1000000, or --default\n")
        return 2

    async def action(conn: asyncpg.Connection) -> int:
        await schema.check_schema(conn)
        if args.account_command == "create":
            account = await accounts.create_account(conn, args.name)
            _print_json(
                {"account_id": account.account_id, "name": account.name, "api_key": account.api_key}
            )
            return 0
        async with conn.transaction():
            if args.account_command == "rotate-key":
                key = await accounts.rotate_key(conn, args.account)
                if key is None:
                    return _not_found(args.account)
                summary = {"new_prefix": key[: accounts.PREFIX_LENGTH]}
                await audit.record(conn, args.account, None, None, "keys.replaced", summary)
                _print_json({"account_id": args.account, "api_key": key})
                return 0
            if args.account_command == "rate-limit":
                per_minute = None if args.default else args.per_minute
                if not await accounts.set_rate_limit(conn, args.account, per_minute):
                    return _not_found(args.account)
                changed = {"rate_limit_per_minute": per_minute}
                await audit.record(
                    conn, args.account, None, None, "account.rate_limit_changed", changed
                )
                _print_json({"account_id": args.account, **changed})
                return 0
            if not await accounts.disable_account(conn, args.account):
                return _not_found(args.account)
            await audit.record(conn, args.account, None, None, "account.disabled", {})
        _print_json({"account_id": args.account, "disabled": True})
        return 0

    result: int = asyncio.run(_with_connection(service, action))
    return result


def cmd_domain(args: argparse.Namespace, env: dict[str, str]) -> int:
    """`shortlink domain add|list|remove`: operators manage branded domains (trusted, like
    `account create`: `add --verified` skips the DNS check)."""
    service = resolve_service(ServiceConfig.from_env(env), kafka=False)
    short_domain = PublicAddresses.from_env(env).short_domain
    name = (
        domains.normalise(args.domain, short_domain)
        if args.domain_command in ("add", "remove")
        else None
    )

    async def action(conn: asyncpg.Connection) -> int:
        await schema.check_schema(conn)
        if args.domain_command == "list":
            rows = await (
                domains.every(conn)
                if args.account is None
                else domains.of_account(conn, args.account)
            )
            _print_json([{"account_id": row["account_id"], **domains.public(row)} for row in rows])
            return 0
        assert name is not None  # noqa: S101 - add and remove name one
        async with conn.transaction():
            if args.domain_command == "add":
                if not await conn.fetchval("SELECT true FROM accounts WHERE id = $1", args.account):
                    return _not_found(args.account)
                row = await domains.add(conn, args.account, name, verified=args.verified)
                await audit.record(
                    conn,
                    args.account,
                    None,
                    None,
                    "domain.added",
                    {"domain": name, "verified": args.verified},
                )
                _print_json({"account_id": args.account, **domains.public(row)})
                return 0
            # Every account's claim of the name (one verified at most), each audited.
            owners = await domains.remove(conn, None, name)
            if not owners:
                sys.stderr.write(f"shortlink: no domain {name}\n")
                return 1
            for owner in owners:
                await audit.record(conn, owner, None, None, "domain.removed", {"domain": name})
        _print_json({"domain": name, "removed": True})
        return 0

    result: int = asyncio.run(_with_connection(service, action))
    return result


def cmd_keys(args: argparse.Namespace, env: dict[str, str]) -> int:
    service = resolve_service(ServiceConfig.from_env(env), kafka=False)
    if args.keys_command == "create":
        unknown = [scope for scope in args.scope if scope not in accounts.SCOPES]
        if not args.scope or unknown:
            sys.stderr.write(
                f"shortlink: --scope must be given, each one of {', '.join(accounts.SCOPES)}\n"
            )
            return 2
        name = args.name.strip()
        if not 1 <= len(name) <= accounts.MAX_KEY_NAME or "\x00" in name:
            sys.stderr.write(f"shortlink: --name must be 1 to {accounts.MAX_KEY_NAME} characters\n")
            return 2
        if args.expires_in_days is not None and not 1 <= args.expires_in_days <= 3650:
            sys.stderr.write("shortlink: --expires-in-days must be from 1 to 3650\n")
            return 2

    async def action(conn: asyncpg.Connection) -> int:
        await schema.check_schema(conn)
        exists = await conn.fetchval("SELECT true FROM accounts WHERE id = $1", args.account)
        if not exists:
            return _not_found(args.account)
        if args.keys_command == "list":
            _print_json(await accounts.list_keys(conn, args.account))
            return 0
        expires = (
            None
            if args.expires_in_days is None
            else datetime.now(UTC) + timedelta(days=args.expires_in_days)
        )
        async with conn.transaction():
            made = await accounts.create_key(
                conn, args.account, name=name, scopes=args.scope, expires_at=expires
            )
            public = made.public()
            await audit.record(
                conn,
                args.account,
                None,
                None,
                "key.created",
                {key: public[key] for key in ("id", "name", "prefix", "scopes", "expires_at")},
            )
        _print_json(public)
        return 0

    result: int = asyncio.run(_with_connection(service, action))
    return result


def _not_found(account_id: int) -> int:
    sys.stderr.write(f"no account with id {account_id}\n")
    return 1


def _checked_link(args: argparse.Namespace, env: dict[str, str]) -> tuple[str, str | None]:
    """The target URL and phone number as POST /v1/links takes them (the same checks,
    SHORT_DOMAIN from the environment when set), or InvalidInput naming the option."""
    short_domain = PublicAddresses.from_env(env).short_domain or ""
    checked: dict[str, str | None] = {}
    checks: list[tuple[str, str | None, Callable[[str], str]]] = [
        ("--url", args.url, lambda value: validation.target_url(value, short_domain)),
        ("--phone-number", args.phone_number, validation.phone_number),
        ("--client-ref", args.client_ref, _short_text),
        ("--client-identifier", args.client_identifier, _short_text),
    ]
    for option, value, check in checks:
        try:
            checked[option] = None if value is None else check(validation.text(value))
        except InvalidInput as exc:
            raise InvalidInput(f"{option}: {exc}") from None
    return checked["--url"] or "", checked["--phone-number"]


def _short_text(value: str) -> str:
    if len(value) > validation.MAX_TEXT_LENGTH:
        raise InvalidInput(f"must be at most {validation.MAX_TEXT_LENGTH} characters")
    return value


def cmd_link(args: argparse.Namespace, env: dict[str, str]) -> int:
    try:
        url, phone = _checked_link(args, env)
    except InvalidInput as exc:
        sys.stderr.write(f"shortlink: {exc}\n")
        return 2
    days = args.expires_in_days
    if days is not None and not 1 <= days <= accounts.MAX_LINK_LIFETIME_DAYS:
        sys.stderr.write(
            f"shortlink: --expires-in-days must be from 1 to {accounts.MAX_LINK_LIFETIME_DAYS}\n"
        )
        return 2
    service = resolve_service(ServiceConfig.from_env(env), kafka=False)

    async def action(conn: asyncpg.Connection) -> int:
        await schema.check_schema(conn)
        lifetime = (
            days if days is not None else await accounts.link_lifetime_days(conn, args.account)
        )
        expires = datetime.now(UTC) + timedelta(days=lifetime)
        [link] = await create_links(
            conn,
            args.account,
            [
                NewLink(
                    target_url=url,
                    phone_number=phone,
                    client_ref=args.client_ref,
                    client_identifier=args.client_identifier,
                    expires_at=expires,
                    unsafe=args.unsafe,
                )
            ],
            token_length=service.token_length,
        )
        _print_json({"tracking_url_id": link.id, "token": link.token})
        return 0

    result: int = asyncio.run(_with_connection(service, action))
    return result


def cmd_endpoint(args: argparse.Namespace, env: dict[str, str]) -> int:
    service = resolve_service(ServiceConfig.from_env(env), kafka=False)

    async def action(conn: asyncpg.Connection) -> int:
        await schema.check_schema(conn)
        if args.endpoint_command == "show":
            endpoint = await endpoints.get_endpoint(conn, args.account)
            if endpoint is None:
                sys.stderr.write(f"account {args.account} has no endpoint\n")
                return 1
        else:
            async with conn.transaction():
                endpoint = await endpoints.set_endpoint(
                    conn,
                    args.account,
                    url=args.url,
                    format=args.format,
                    mode=args.mode,
                    secret=args.secret,
                    enabled=not args.disabled,
                    allow_private=service.allow_private_endpoints,
                    conversions=args.conversions,
                    dns_timeout=service.endpoint_dns_timeout,
                )
                await audit.record(
                    conn, args.account, None, None, "endpoint.changed", endpoint.public()
                )
        _print_json({"account_id": args.account, **endpoint.public()})
        return 0

    result: int = asyncio.run(_with_connection(service, action))
    return result


def cmd_purge(args: argparse.Namespace, env: dict[str, str]) -> int:
    now = datetime.now(UTC)
    if args.as_of and args.as_of > now and not args.dry_run:
        # It would remove what is still kept now: live links, this week's partition.
        sys.stderr.write("shortlink: --as-of: a moment ahead only with --dry-run\n")
        return 2
    service = resolve_service(ServiceConfig.from_env(env), kafka=False)
    policy = purge.Policy(args.as_of or now, purge.Retention.from_env(env), dry_run=args.dry_run)

    async def action(conn: asyncpg.Connection) -> int:
        await schema.check_schema(conn)
        report = await purge.purge(conn, policy)
        _print_json({"as_of": rfc3339(policy.as_of), "dry_run": policy.dry_run, **report.as_json()})
        if not report.ran:
            sys.stderr.write("shortlink: another purge is running; nothing done\n")
            return 1
        return 0

    result: int = asyncio.run(_with_connection(service, action))
    return result


def _instant(text: str) -> datetime:
    """An ISO 8601 instant for --as-of; one without an offset is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 instant: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_deliveries(args: argparse.Namespace, env: dict[str, str]) -> int:
    service = resolve_service(ServiceConfig.from_env(env), kafka=False)

    async def action(conn: asyncpg.Connection) -> int:
        await schema.check_schema(conn)
        if args.deliveries_command == "list":
            _print_json(
                await deliveries.list_deliveries(
                    conn, args.account, status=args.status, limit=args.limit
                )
            )
        else:
            queued = await deliveries.retry_dead(conn, args.account, args.request_identifier)
            _print_json({"account_id": args.account, "requeued": queued})
        return 0

    result: int = asyncio.run(_with_connection(service, action))
    return result


def cmd_dashboard_link(args: argparse.Namespace, env: dict[str, str]) -> int:
    from shortlink.api.dashboard.sessions import MAX_LINK_HOURS, Grant, dashboard_link

    config = DashboardConfig.from_env(env, require_secret=True)
    if not 0 < args.hours <= MAX_LINK_HOURS:
        sys.stderr.write(f"shortlink: --hours must be more than 0 and at most {MAX_LINK_HOURS}\n")
        return 2
    service = resolve_service(ServiceConfig.from_env(env), kafka=False)

    async def action(conn: asyncpg.Connection) -> int:
        await schema.check_schema(conn)
        key_id = await accounts.current_key(conn, args.account)
        if key_id is None:
            sys.stderr.write(f"no enabled account with id {args.account} and an API key\n")
            return 1
        if args.campaign is not None and not await conn.fetchval(
            "SELECT true FROM campaign_stats WHERE account_id = $1 AND campaign = $2",
            args.account,
            args.campaign,
        ):
            sys.stderr.write(f"account {args.account} has no campaign {args.campaign!r}\n")
            return 1
        expires_at = int(time.time() + args.hours * 3600)
        grant = Grant(args.account, key_id, args.campaign, expires_at)
        sys.stdout.write(dashboard_link(config, grant))
        sys.stdout.write("\n")
        until = datetime.fromtimestamp(expires_at, UTC)
        sys.stderr.write(
            f"read-only, valid until {until:%Y-%m-%d %H:%M} UTC or until the account's "
            "API key is rotated\n"
        )
        return 0

    result: int = asyncio.run(_with_connection(service, action))
    return result


def cmd_dev(args: argparse.Namespace, env: dict[str, str]) -> int:
    from shortlink.dev.stack import run_stack

    return run_stack(env)


# -- argument parsing ----------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shortlink", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("migrate", help="apply pending database migrations, create the topic")

    redirect = commands.add_parser("redirect", help="run the redirect server")
    redirect.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    redirect.add_argument("--port", type=int, help="port (default 8080)")
    redirect.add_argument("--workers", type=int, help="processes sharing the port (default: CPUs)")

    api = commands.add_parser("api", help="run the API")
    api.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    api.add_argument("--port", type=int, help="port (default 8081)")
    api.add_argument("--workers", type=int, help="processes sharing the port (default: CPUs)")

    account = commands.add_parser("account", help="manage accounts and API keys")
    account_commands = account.add_subparsers(dest="account_command", required=True)
    create = account_commands.add_parser("create", help="create an account; prints its API key")
    create.add_argument("--name", required=True)
    rotate = account_commands.add_parser("rotate-key", help="revoke the keys, issue a new one")
    rotate.add_argument("--account", type=int, required=True)
    disable = account_commands.add_parser("disable", help="disable an account and its keys")
    disable.add_argument("--account", type=int, required=True)
    limit = account_commands.add_parser(
        "rate-limit", help="requests per minute each key of the account may make"
    )
    limit.add_argument("--account", type=int, required=True)
    limit_value = limit.add_mutually_exclusive_group(required=True)
    limit_value.add_argument("--per-minute", type=int)
    limit_value.add_argument(
        "--default", action="store_true", help="back to API_RATE_LIMIT_PER_MINUTE"
    )

    domain = commands.add_parser("domain", help="an account's branded short domains")
    domain_commands = domain.add_subparsers(dest="domain_command", required=True)
    domain_add = domain_commands.add_parser("add", help="give an account a branded domain")
    domain_add.add_argument("--account", type=int, required=True)
    domain_add.add_argument(
        "--verified", action="store_true", help="trusted: no DNS check (the operator vouches)"
    )
    domain_add.add_argument("domain")
    domain_list = domain_commands.add_parser("list", help="the domains (of one account)")
    domain_list.add_argument("--account", type=int)
    domain_remove = domain_commands.add_parser("remove", help="remove a domain; its links stop")
    domain_remove.add_argument("domain")

    keys = commands.add_parser("keys", help="an account's named, scoped API keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    key_list = keys_commands.add_parser("list", help="the working keys (never their secrets)")
    key_list.add_argument("--account", type=int, required=True)
    key_create = keys_commands.add_parser("create", help="make a key; prints its secret once")
    key_create.add_argument("--account", type=int, required=True)
    key_create.add_argument("--name", required=True)
    key_create.add_argument(
        "--scope",
        action="append",
        default=[],
        help=f"a scope the key holds (repeat for more): {', '.join(accounts.SCOPES)}",
    )
    key_create.add_argument("--expires-in-days", type=int, help="default: never")

    link = commands.add_parser("link", help="create one tracked link (the API does this in bulk)")
    link.add_argument("action", choices=["create"])
    link.add_argument("--account", type=int, required=True)
    link.add_argument("--url", required=True)
    link.add_argument("--phone-number")
    link.add_argument("--client-ref")
    link.add_argument("--client-identifier")
    link.add_argument(
        "--expires-in-days",
        type=int,
        help="1 to 365; default: the account's link_lifetime_days (90 unless changed)",
    )
    link.add_argument("--unsafe", action="store_true", help="show the warning page first")

    endpoint = commands.add_parser("endpoint", help="where an account's clicks are forwarded")
    endpoint_commands = endpoint.add_subparsers(dest="endpoint_command", required=True)
    show = endpoint_commands.add_parser("show", help="print the account's endpoint")
    show.add_argument("--account", type=int, required=True)
    set_ = endpoint_commands.add_parser("set", help="create or replace the account's endpoint")
    set_.add_argument("--account", type=int, required=True)
    set_.add_argument("--url", required=True)
    set_.add_argument("--format", choices=endpoints.FORMATS, default="json")
    set_.add_argument("--mode", choices=endpoints.MODES, default="every")
    set_.add_argument("--secret", help="Standard Webhooks signing secret (whsec_...)")
    set_.add_argument("--disabled", action="store_true", help="store it, but do not deliver")
    set_.add_argument(
        "--conversions", action="store_true", help="also send conversions (CONVERTED events)"
    )

    delivery = commands.add_parser("deliveries", help="forwarded batches and dead letters")
    delivery_commands = delivery.add_subparsers(dest="deliveries_command", required=True)
    listing = delivery_commands.add_parser("list", help="the account's deliveries, newest first")
    listing.add_argument("--account", type=int, required=True)
    listing.add_argument("--status", choices=deliveries.STATUSES)
    listing.add_argument("--limit", type=int, default=50)
    retry = delivery_commands.add_parser("retry", help="send dead letters again")
    retry.add_argument("--account", type=int, required=True)
    retry.add_argument("--request-identifier", help="only this delivery (default: every dead one)")

    share = commands.add_parser(
        "dashboard-link", help="print a signed, expiring URL that opens the dashboard read-only"
    )
    share.add_argument("--account", type=int, required=True)
    share.add_argument("--campaign", help="open this campaign's page; the link sees no other")
    share.add_argument("--hours", type=float, default=24.0, help="valid this long (default 24)")

    cleanup = commands.add_parser(
        "purge", help="remove what the retention settings no longer keep; prints JSON counts"
    )
    cleanup.add_argument(
        "--as-of", type=_instant, help="act as at this ISO 8601 instant (default: now)"
    )
    cleanup.add_argument("--dry-run", action="store_true", help="count, remove nothing")

    commands.add_parser("dev", help="run the whole stack locally (what `make run` does)")
    return parser


HANDLERS: dict[str, Callable[[argparse.Namespace, dict[str, str]], int]] = {
    "migrate": cmd_migrate,
    "redirect": cmd_redirect,
    "api": cmd_api,
    "account": cmd_account,
    "keys": cmd_keys,
    "domain": cmd_domain,
    "link": cmd_link,
    "endpoint": cmd_endpoint,
    "deliveries": cmd_deliveries,
    "purge": cmd_purge,
    "dashboard-link": cmd_dashboard_link,
    "dev": cmd_dev,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = dict(os.environ)
    try:
        logs.configure(ServiceConfig.from_env(env).log_level)
        return HANDLERS[args.command](args, env)
    except (EndpointError, InvalidInput) as exc:  # what the command was given
        sys.stderr.write(f"shortlink: {exc}\n")
        return 2
    except STARTUP_ERRORS as exc:
        sys.stderr.write(f"shortlink: {exc}\n")
        return EXIT_CONFIG
    except (OSError, asyncpg.PostgresError, ShortlinkError) as exc:
        sys.stderr.write(f"shortlink: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
