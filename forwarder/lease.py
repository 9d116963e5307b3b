"""The lease on an endpoint: across all forwarder processes, one sends to it at a time.

A lease is a row lock with an expiry in `endpoints` (`lease_owner`,
`lease_until`): a process takes it when nobody holds it or the holder let it
expire, and gives it back when it has nothing more to send. Two processes must
never have requests in flight to one endpoint, so the holder obeys three rules:

- **A request starts only inside the lease.** This process knows a lower bound of
  its lease's end (the time it *sent* the statement that took or renewed it, plus
  DELIVERY_LEASE_SECONDS). A request starts only while that bound is at least
  DELIVERY_TIMEOUT_SECONDS plus one database step away, and is cut at the bound
  minus one step (`request()`), so it ends before another process could take the
  lease, with time left to record its outcome. The configuration refuses a timeout
  longer than half the lease, so a fresh lease always leaves that room.
- **The lease is renewed while requests run.** `keep()` renews it every third of
  its length. A renewal that finds the lease gone (another process holds it, the
  endpoint was disabled) cuts whatever runs under the lease at once (`LeaseLost`).
- **Outcomes are recorded only by the holder.** Every database step is bounded by
  a sixth of the lease and by the lease itself (`step()`), pool acquisition
  included; the statements that settle a delivery check the owner and the expiry
  in the same statement (`HELD`), so a process that lost its lease settles nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg

from forwarder.exceptions import LeaseLost

log = logging.getLogger(__name__)

STEPS_PER_LEASE = 6  # a database step takes at most a sixth of the lease
RENEWALS_PER_LEASE = 3  # the lease is renewed every third of its length
# Failures of the database that are worth trying again: the server, the connection,
# the network, a step that ran out of time (TimeoutError is an OSError).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
)
# SQL condition on `endpoints e`: the lease is held by $owner and has not expired.
HELD = "e.lease_owner = {owner} AND e.lease_until > now()"


@dataclass(frozen=True)
class Target:
    """Where and how to send, as the endpoint row said when the lease was last renewed."""

    id: int
    url: str
    secret: str | None


# A callback URL (an endpoints row owned through callback_account_id) has no secret
# of its own: it signs with the account endpoint's, as that is now.
_TARGET = """
    id, url,
    CASE WHEN endpoints.callback_account_id IS NULL THEN endpoints.secret
         ELSE (SELECT a.secret FROM endpoints a
               WHERE a.account_id = endpoints.callback_account_id) END AS secret
"""
_TAKE = f"""
    UPDATE endpoints SET lease_owner = $2, lease_until = now() + make_interval(secs => $3)
    WHERE id = $1 AND enabled
      AND (lease_until IS NULL OR lease_until < now() OR lease_owner = $2)
    RETURNING {_TARGET}
"""
# Ours still: nobody took it since (taking sets the owner), even if it expired.
_RENEW = f"""
    UPDATE endpoints SET lease_until = now() + make_interval(secs => $3)
    WHERE id = $1 AND enabled AND lease_owner = $2
    RETURNING {_TARGET}
"""


class Lease:
    """This process's hold on one endpoint's lease."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        endpoint_id: int,
        owner: str,
        seconds: float,
        *,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.endpoint_id = endpoint_id
        self.owner = owner
        self.seconds = seconds
        self.step_seconds = seconds / STEPS_PER_LEASE
        self.lost = False
        self._target: Target | None = None
        self._pool = pool
        self._on_error = on_error  # an unexpected error, logged here, to be counted
        self._loop = asyncio.get_running_loop()
        self._valid_until = 0.0  # loop time; a lower bound of lease_until
        self._renewed_at = 0.0
        self._bounds: set[asyncio.Timeout] = set()

    @property
    def remaining(self) -> float:
        """Seconds the lease surely lasts (0 or less: it may have expired)."""
        return self._valid_until - self._loop.time()

    async def take(self) -> bool:
        """Take the lease unless another process holds it; whether we hold it now."""
        return await self._update(_TAKE)

    async def renew(self) -> None:
        """Extend the lease; LeaseLost (and what runs under it is cut) if it is not ours."""
        if not await self._update(_RENEW):
            self.lose()
            raise LeaseLost(f"endpoint {self.endpoint_id}: the lease is no longer ours")

    async def _update(self, query: str) -> bool:
        if self.lost:
            raise LeaseLost(f"endpoint {self.endpoint_id}: the lease was lost")
        sent = self._loop.time()
        async with asyncio.timeout(self.step_seconds):
            row = await self._pool.fetchrow(query, self.endpoint_id, self.owner, self.seconds)
        if row is None:
            return False
        self._renewed_at = sent
        self._valid_until = sent + self.seconds
        self._target = Target(row["id"], row["url"], row["secret"])
        return True

    @property
    def target(self) -> Target:
        """The endpoint as the last take or renewal read it."""
        if self._target is None:
            raise RuntimeError("the lease was never taken")
        return self._target

    def step(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Bound one database step: a sixth of the lease, and the lease itself."""
        return self._bounded(min(self._loop.time() + self.step_seconds, self._valid_until))

    def request(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Bound requests in flight: they end a step before the lease does."""
        return self._bounded(self._valid_until - self.step_seconds)

    @contextlib.asynccontextmanager
    async def _bounded(self, deadline: float) -> AsyncIterator[None]:
        """TimeoutError at `deadline`; LeaseLost as soon as the lease is lost."""
        if self.lost:
            raise LeaseLost(f"endpoint {self.endpoint_id}: the lease was lost")
        try:
            async with asyncio.timeout_at(deadline) as timeout:
                self._bounds.add(timeout)
                try:
                    yield
                finally:
                    self._bounds.discard(timeout)
        except TimeoutError:
            if self.lost:
                raise LeaseLost(f"endpoint {self.endpoint_id}: the lease was lost") from None
            raise

    def lose(self) -> None:
        """The lease is not ours: cut every step and request running under it."""
        self.lost = True
        now = self._loop.time()
        for timeout in list(self._bounds):
            if not timeout.expired():
                timeout.reschedule(now)

    async def keep(self) -> None:
        """Renew the lease every third of its length until cancelled or lost."""
        while True:
            next_renewal = self._renewed_at + self.seconds / RENEWALS_PER_LEASE
            await asyncio.sleep(max(0.0, next_renewal - self._loop.time()))
            try:
                await self.renew()
            except LeaseLost:
                log.warning(
                    "lost the lease on an endpoint; another process sends to it",
                    extra={"endpoint_id": self.endpoint_id},
                )
                return
            except DATABASE_ERRORS as exc:
                if self.remaining <= 0:
                    log.warning(
                        "could not renew the lease on an endpoint before it ran out",
                        extra={"endpoint_id": self.endpoint_id, "error": repr(exc)},
                    )
                    self.lose()
                    return
                await asyncio.sleep(min(1.0, self.step_seconds))
            except Exception:  # whatever went wrong, stop what the lease covers
                log.exception(
                    "renewing a lease failed unexpectedly", extra={"endpoint_id": self.endpoint_id}
                )
                self._on_error()
                self.lose()
                return

    async def release(self) -> None:
        """Give the lease back (if it is still ours), so another process need not wait."""
        with contextlib.suppress(*DATABASE_ERRORS):
            async with asyncio.timeout(self.step_seconds):
                await self._pool.execute(
                    """
                    UPDATE endpoints SET lease_owner = NULL, lease_until = NULL
                    WHERE id = $1 AND lease_owner = $2
                    """,
                    self.endpoint_id,
                    self.owner,
                )
