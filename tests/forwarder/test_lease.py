"""The lease on an endpoint, against the real database: taken once, renewed, lost, bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from forwarder.exceptions import LeaseLost
from forwarder.lease import STEPS_PER_LEASE, Lease
from shortlink.config import ServiceConfig
from shortlink.pool import open_pool
from tests.forwarder.endpoint import set_endpoint
from tests.infra import wait_until


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the session's database, its connections open (short leases need them)."""
    config = ServiceConfig.from_env({"DATABASE_URL": database_url})
    async with open_pool(config, min_size=3) as pool:
        yield pool


@pytest.fixture
async def endpoint_id(db: asyncpg.Connection, account_id: int) -> int:
    """An enabled endpoint of a fresh account."""
    await set_endpoint(db, account_id, "http://127.0.0.1:9/hook")
    found: int = await db.fetchval("SELECT id FROM endpoints WHERE account_id = $1", account_id)
    return found


async def test_one_holder_at_a_time(
    pool: asyncpg.Pool, db: asyncpg.Connection, endpoint_id: int
) -> None:
    """A lease held by one process cannot be taken by another until it expires or is released."""
    first = Lease(pool, endpoint_id, "first", 60)
    second = Lease(pool, endpoint_id, "second", 60)
    assert await first.take()
    assert first.target.url == "http://127.0.0.1:9/hook"
    assert 59 < first.remaining <= 60
    assert not await second.take()
    await db.execute(
        "UPDATE endpoints SET lease_until = now() - interval '1 s' WHERE id = $1", endpoint_id
    )
    assert await second.take()
    with pytest.raises(LeaseLost):
        await first.renew()
    assert first.lost
    await first.release()  # not its lease any more: changes nothing
    assert await db.fetchval("SELECT lease_owner FROM endpoints WHERE id = $1", endpoint_id) == (
        "second"
    )
    await second.release()
    assert await Lease(pool, endpoint_id, "third", 60).take()


async def test_a_disabled_endpoint_loses_its_lease(
    pool: asyncpg.Pool, db: asyncpg.Connection, endpoint_id: int
) -> None:
    """Renewing the lease of an endpoint that was disabled meanwhile fails: stop sending."""
    lease = Lease(pool, endpoint_id, "me", 60)
    assert await lease.take()
    await db.execute("UPDATE endpoints SET enabled = false WHERE id = $1", endpoint_id)
    with pytest.raises(LeaseLost):
        await lease.renew()


async def test_a_renewal_that_finds_the_lease_gone_cuts_what_runs_under_it(
    pool: asyncpg.Pool, db: asyncpg.Connection, endpoint_id: int
) -> None:
    """Requests and steps in flight end with LeaseLost as soon as the lease is known lost."""
    lease = Lease(pool, endpoint_id, "me", 60)
    assert await lease.take()
    started = asyncio.Event()

    async def request() -> None:
        async with lease.request():
            started.set()
            await asyncio.sleep(3600)

    in_flight = asyncio.create_task(request())
    await started.wait()
    await db.execute("UPDATE endpoints SET lease_owner = 'thief' WHERE id = $1", endpoint_id)
    with pytest.raises(LeaseLost):
        await lease.renew()
    with pytest.raises(LeaseLost):
        await asyncio.wait_for(in_flight, 10)
    with pytest.raises(LeaseLost):
        async with lease.step():
            pass


async def test_the_lease_is_kept_while_a_request_runs(
    pool: asyncpg.Pool, db: asyncpg.Connection, endpoint_id: int
) -> None:
    """keep() renews the lease, so no other process takes it past its first expiry."""
    lease = Lease(pool, endpoint_id, "me", 3)
    other = Lease(pool, endpoint_id, "other", 3)
    assert await lease.take()
    first_expiry = await db.fetchval("SELECT lease_until FROM endpoints WHERE id = $1", endpoint_id)
    keeper = asyncio.create_task(lease.keep())
    try:
        # The lease must outlive its first expiry, a wall-clock time the database measures:
        # this waits the lease's length (3 s), trying to take the lease all along.
        async def past_first_expiry() -> bool:
            assert not await other.take()
            assert lease.remaining > 0
            return bool(await db.fetchval("SELECT now() > $1", first_expiry))

        await wait_until(past_first_expiry, within=30, step=0.2, what="the first expiry passed")
        assert not await other.take()
    finally:
        keeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await keeper
    assert not lease.lost


async def test_keep_cuts_requests_when_another_process_took_the_lease(
    pool: asyncpg.Pool, db: asyncpg.Connection, endpoint_id: int
) -> None:
    """A request under a lease that keep() finds taken is cut, however long it would run."""
    lease = Lease(pool, endpoint_id, "me", 3)
    assert await lease.take()
    keeper = asyncio.create_task(lease.keep())
    await db.execute("UPDATE endpoints SET lease_owner = 'thief' WHERE id = $1", endpoint_id)
    with pytest.raises(LeaseLost):
        async with asyncio.timeout(30), lease.request():
            await asyncio.sleep(3600)
    await asyncio.wait_for(keeper, 10)  # it returns once the lease is lost
    assert lease.lost


async def test_a_step_is_bounded(pool: asyncpg.Pool, endpoint_id: int) -> None:
    """A database step that hangs ends with TimeoutError after a sixth of the lease."""
    lease = Lease(pool, endpoint_id, "me", 3)
    assert lease.step_seconds == 3 / STEPS_PER_LEASE
    assert await lease.take()
    with pytest.raises(TimeoutError):
        async with lease.step():
            await pool.execute("SELECT pg_sleep(30)")
    assert not lease.lost
