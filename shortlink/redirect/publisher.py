"""Click publishing: from the redirect handler to Kafka, never making a redirect wait.

The handler calls `submit()`, which encodes the click as its event (event id,
orjson), copies it into the journal (a shared file mapping that outlives the
process: shortlink.redirect.journal), appends it to an in-memory list and
returns. A flusher task wakes when the list becomes non-empty, lets clicks
gather for the linger time and sends them as per-partition record batches with
acks=all; a batch leaves the journal once the broker acknowledged it or it is
spooled. A worker starting with journaled clicks left by a killed one moves them
to the spool first. When Kafka cannot take them
(unreachable at start, a failed or timed-out send), they are appended to the
spool file instead, and from then on every batch goes to the spool until a
replay task has sent the whole spool, in order, to the broker again. The buffer
is bounded: at half its limit (a send is stuck) a spiller task moves it to the
spool a slice at a time; only if it still reaches the limit is it moved at once,
in the handler. Only a full spool loses clicks, and that is logged loudly and
counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shortlink import clickevent
from shortlink.kafka import partition_for
from shortlink.redirect.config import RedirectConfig
from shortlink.redirect.entries import LINK_FIELDS_AT, LinkGroup
from shortlink.redirect.journal import Journal, Ticket, journal_path, recover
from shortlink.redirect.spool import Record, Spool, open_own, orphans
from shortlink.retry import Backoff, Retry
from shortlink.supervise import SUPERVISOR, Supervised, Supervisor

log = logging.getLogger(__name__)

# What a failed send can raise: broker errors, our own timeout, socket errors.
SEND_ERRORS = (KafkaError, TimeoutError, OSError)
_REPLAY_BATCH = 5_000
_MAX_BATCH_BYTES = 1 << 20
# Waits before connecting to the broker, or sending spooled clicks, again: 0.5 s
# doubling, at most 5 s (jittered, so the workers of a host do not retry in step).
_RETRY = Backoff(first=0.5, cap=5.0)
_LOUD_EVERY = 10.0  # seconds between repeated "spool is full" errors
_PROBE_TIMEOUT = 1.0
_SLICE = 256  # clicks encoded and sent per stretch of the event loop


class ClickPublisher:
    """Bounded click buffer -> Kafka, with a disk spool while Kafka is away."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        buffer_limit: int,
        linger: float,
        request_timeout: float,
        spool_dir: Path,
        spool_name: str,
        spool_max_bytes: int,
        supervisor: Supervisor,
        sibling_spools: Collection[str] = (),
        journal_bytes: int = 0,
    ) -> None:
        self.topic = topic
        self._bootstrap_servers = bootstrap_servers
        self._buffer_limit = buffer_limit
        self._spill_at = max(2, buffer_limit // 2)
        self._linger = linger
        self._request_timeout = request_timeout
        self._supervisor = supervisor
        self._buffer: list[Record] = []
        self._ids = clickevent.EventIds()
        self._spool = open_own(spool_dir, spool_name, spool_max_bytes)
        running = {*sibling_spools, spool_name, self._spool.path.stem}
        self._adopted = list(orphans(spool_dir, spool_max_bytes, running))
        # Clicks a killed worker left in its journal (or an adopted spool's), now spooled.
        recoveries = [_recover_journal(spool) for spool in [self._spool, *self._adopted]]
        self.recovered = sum(count for count, _ in recoveries)
        # The journal of the spool this worker owns (its flock makes the journal ours too).
        self._journal: Journal | None = None
        if journal_bytes > 0 and not recoveries[0][1]:
            # A new journal would empty the old one, which holds clicks the spool refused.
            log.error(
                "the click journal keeps clicks the spool could not take; running without "
                "a journal until the next start",
                extra={"journal": str(journal_path(spool_dir, self._spool.path.stem))},
            )
        elif journal_bytes > 0:
            path = journal_path(spool_dir, self._spool.path.stem)
            try:
                self._journal = Journal(path, journal_bytes)
            except OSError as exc:
                # A disk too full for it: redirects go on, and a SIGKILL can lose clicks.
                log.error(
                    "cannot create the click journal; running without it",
                    extra={"journal": str(path), "error": repr(exc)},
                )
        self._producer: AIOKafkaProducer | None = None
        self._partitions = 0
        self._metadata_stale = False
        # True from the first failed send until the spool is fully replayed.
        self._spooling = self._spool.pending
        self._wakeup = asyncio.Event()
        self._replay_wakeup = asyncio.Event()
        self._spill_wakeup = asyncio.Event()
        self._closing = asyncio.Event()
        self._tasks: list[Supervised] = []
        self._last_loud = 0.0
        self.lost = 0  # clicks that could not even be spooled because of an error
        self.journal_full = 0  # clicks spooled at once because the journal had no room
        self.submitted = 0
        self.published = 0
        self.spooled = 0
        self.replayed = 0
        self.send_failures = 0

    # -- the hot path ---------------------------------------------------------

    def submit(
        self,
        token: str,
        group: LinkGroup,
        packed: bytes,
        clicked_at: float,
        user_agent: str | None,
        client_ip: str | None,
        referer: str | None,
        method: str,
        warning_page_served: bool,
        smart: clickevent.Smart | None = None,
    ) -> None:
        """Encode and journal one click, then queue it. Never blocks, never awaits, never raises.

        The event is made here, not in the flusher, so that the journal holds it with its
        event id: a click replayed from the journal is the same event, recorded once."""
        self.submitted += 1
        try:
            key = token.encode()
            clicked_at_ms = int(clicked_at * 1000)
            record = (
                key,
                clicked_at_ms,
                clickevent.assemble(
                    self._ids.next_bytes(clicked_at_ms),
                    key,
                    packed,
                    LINK_FIELDS_AT,
                    group.event_fields or group.encoded_fields(),
                    clicked_at_ms,
                    user_agent,
                    client_ip,
                    referer,
                    method,
                    warning_page_served,
                    smart,
                ),
            )
            journal = self._journal
            if journal is not None and not journal.append(record[2]):
                # Unacknowledged clicks fill the journal (a send is stuck): to the spool.
                self.journal_full += 1
                self._to_spool([record])
                return
        except Exception:  # noqa: BLE001 - never a 500 for the phone; logged by _lose
            self._lose(1, "encoding a click failed")
            return
        buffer = self._buffer
        buffer.append(record)
        size = len(buffer)
        if size == 1:
            self._wakeup.set()
        elif size == self._spill_at:
            # A send is stuck: the spiller moves the buffer to disk in slices.
            self._spill_wakeup.set()
        elif size >= self._buffer_limit:
            # The spiller did not keep up: move it now, in the handler (a stall, no loss).
            self._spill()

    # -- state ----------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def spool_bytes(self) -> int:
        return self._spool.pending_bytes + sum(spool.pending_bytes for spool in self._adopted)

    @property
    def dropped(self) -> int:
        return self._spool.dropped

    @property
    def spooling(self) -> bool:
        return self._spooling

    async def broker_reachable(self) -> bool:
        """Whether the broker answers a metadata request within a second."""
        producer = self._producer
        if producer is None:
            return False
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT):
                return bool(await producer.client.force_metadata_update())
        except SEND_ERRORS:
            return False

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Start the background tasks; waits for Kafka at most one request timeout."""
        if self._spooling or self._adopted:
            self._replay_wakeup.set()
        spawn = self._supervisor.spawn
        connect = spawn("kafka-connect", self._connect)
        self._tasks = [
            connect,
            spawn("click-flusher", self._flush_loop),
            spawn("spool-replayer", self._replay_loop),
            spawn("click-spiller", self._spill_loop),
        ]
        # Give the broker a moment, so a normal start publishes directly instead of
        # spooling its first clicks; a broker that is down does not hold the start up longer.
        await connect.wait(self._request_timeout)

    async def close(self, grace: float) -> None:
        """Flush what is buffered to Kafka (or the spool), then stop; each step waits <= grace s."""
        self._closing.set()
        self._wakeup.set()
        connect, flusher, replayer, spiller = self._tasks
        await asyncio.gather(connect.stop(), replayer.stop(), spiller.stop())
        if not await flusher.wait(grace):
            log.error("flushing clicks timed out; spooling what is left")
            await flusher.stop()
        # Whatever the flusher could not hand over goes to disk.
        batch, ticket = self._take()
        self._spool_records(batch)
        self._release(ticket)
        if self._producer is not None:
            with contextlib.suppress(*SEND_ERRORS):
                await asyncio.wait_for(self._producer.stop(), grace)
        with contextlib.suppress(OSError):
            self._spool.sync()
        self._spool.close()
        for spool in self._adopted:
            spool.close()
        if self._journal is not None:
            self._journal.close()

    # -- internals ------------------------------------------------------------

    def _take(self) -> tuple[list[Record], Ticket | None]:
        """The buffered clicks, and the journal's ticket for them (release it once they
        are acknowledged or spooled)."""
        batch, self._buffer = self._buffer, []
        journal = self._journal
        return batch, journal.cut() if journal is not None else None

    def _release(self, ticket: Ticket | None) -> None:
        if ticket is not None and self._journal is not None:
            self._journal.release(ticket)

    def _spill(self) -> None:
        """The buffer hit its limit while a send is stuck: move it to disk now. Never
        raises (it runs in the handler: never a 500 for the phone); clicks an unexpected
        error takes are counted as lost and said loudly."""
        self._spooling = True
        self._replay_wakeup.set()
        batch, ticket = self._take()
        try:
            self._spool_records(batch)
        except Exception:  # noqa: BLE001 - logged with its traceback by _lose
            self._lose(len(batch), "moving the click buffer to the spool failed")
        self._release(ticket)

    async def _spill_loop(self) -> None:
        """Half the buffer limit reached (a send is stuck): to the spool, a slice at a time."""
        while True:
            await self._spill_wakeup.wait()
            self._spill_wakeup.clear()
            self._spooling = True
            batch, ticket = self._take()
            done = 0
            try:
                while done < len(batch):
                    if done:
                        await asyncio.sleep(0)
                    self._spool_records(batch[done : done + _SLICE])
                    done += _SLICE
            except asyncio.CancelledError:
                self._spool_records(batch[done:])
                raise
            except Exception:
                self._lose(len(batch) - done, "moving the click buffer to the spool failed")
                raise
            finally:
                self._release(ticket)
                self._replay_wakeup.set()

    def _spool_records(self, records: Sequence[Record]) -> None:
        if not records:
            return
        spool = self._spool
        errors = spool.write_errors
        accepted = spool.append(records)
        self.spooled += accepted
        if accepted < len(records):
            now = time.monotonic()
            if now - self._last_loud >= _LOUD_EVERY:
                self._last_loud = now
                failed = spool.write_errors > errors
                log.error(
                    "cannot write the click spool: clicks are being lost"
                    if failed
                    else "click spool is full: clicks are being lost",
                    extra={
                        "spool": str(spool.path),
                        "spool_bytes": spool.pending_bytes,
                        "dropped_total": spool.dropped,
                        "error": repr(spool.last_error) if failed else None,
                    },
                )

    def _lose(self, count: int, reason: str) -> None:
        """Count clicks that an unexpected error took, with the traceback in the log."""
        self.lost += count
        log.exception(reason, extra={"clicks_lost": count, "lost_total": self.lost})

    async def _connect(self) -> None:
        """Start the producer, retrying until the broker and the topic are there."""
        retry = Retry(_RETRY, on=SEND_ERRORS)
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap_servers,
                client_id="shortlink-redirect",
                acks="all",
                linger_ms=0,  # the flusher already batches
                max_batch_size=_MAX_BATCH_BYTES,
                request_timeout_ms=int(self._request_timeout * 1000),
            )
            try:
                await producer.start()
                partitions = await asyncio.wait_for(
                    producer.partitions_for(self.topic), self._request_timeout
                )
                if not partitions:
                    raise KafkaError(f"topic {self.topic!r} does not exist")
            except asyncio.CancelledError:
                with contextlib.suppress(*SEND_ERRORS):
                    await asyncio.shield(producer.stop())
                raise
            except SEND_ERRORS as exc:
                with contextlib.suppress(*SEND_ERRORS):
                    await producer.stop()
                delay = retry.failed()
                if retry.failures % 20 == 1:
                    log.warning(
                        "Kafka is not available; clicks go to the spool",
                        extra={"error": repr(exc), "retry_in": delay},
                    )
                self._spooling = True
                await asyncio.sleep(delay)
                continue
            self._partitions = len(partitions)
            self._producer = producer
            self._replay_wakeup.set()
            log.info(
                "connected to Kafka", extra={"topic": self.topic, "partitions": len(partitions)}
            )
            return

    async def _flush_loop(self) -> None:
        while not self._closing.is_set():
            await self._wakeup.wait()
            if self._linger > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self._linger)
            self._wakeup.clear()
            await self._flush(*self._take())
        await self._flush(*self._take())

    async def _flush(self, batch: list[Record], ticket: Ticket | None) -> None:
        """Hand `batch` over in slices, letting requests in between, and send it as one
        set of per-partition record batches: one broker round trip per flush; then
        release its journal `ticket` (acknowledged, spooled or counted as lost).

        Batching costs about a microsecond per click; a burst of
        thousands in one stretch would hold every redirect of this worker up. And
        waiting for the broker's acknowledgement after every slice would cap a
        worker at a slice per round trip (~25,000 clicks/s), so the buffer would
        fill and be spilled to disk in the handler under full load.
        """
        try:
            await self._hand_over(batch)
        finally:
            self._release(ticket)

    async def _hand_over(self, batch: list[Record]) -> None:
        outgoing = self._outgoing()
        records: list[Record] = []  # the slice being handed over
        done = 0  # clicks of `batch` taken into slices so far
        try:
            while done < len(batch):
                if done:
                    await asyncio.sleep(0)
                records = batch[done : done + _SLICE]
                done += _SLICE
                if self._spooling or outgoing is None:
                    self._to_spool(records)
                else:
                    await outgoing.add(records)
                records = []
            if outgoing is None:
                return
            await outgoing.finish()
            failed = await outgoing.settle()
        except BaseException as exc:
            # Shutdown gave up waiting for the broker (a cancel), or something failed that
            # should not have: keep on disk whatever is not known to be acknowledged, the
            # slice being handed over and what was not handed over yet (a click both
            # acknowledged late and spooled is recorded once: the forwarder ignores a
            # known event id).
            pending = outgoing.unconfirmed() if outgoing is not None else []
            self._keep(pending, records, batch[done:])
            if not isinstance(exc, Exception):
                raise
            self._supervisor.recovered("click-flusher")
            log.exception(
                "sending clicks failed unexpectedly; spooled them",
                extra={"clicks": len(batch)},
            )
            return
        self.published += outgoing.sent
        if failed:
            self._to_spool(failed)

    def _keep(
        self, pending: Sequence[Record], records: Sequence[Record], rest: Sequence[Record]
    ) -> None:
        """Spool the records of a flush that did not go through: those not acknowledged,
        the slice in hand (some of it may be among them), the clicks not yet handed over."""
        seen = {id(record) for record in pending}
        self._to_spool([*pending, *(record for record in records if id(record) not in seen), *rest])

    def _to_spool(self, records: Sequence[Record]) -> None:
        self._spooling = True
        self._spool_records(records)
        self._replay_wakeup.set()

    def _outgoing(self) -> _Outgoing | None:
        producer = self._producer
        if producer is None:
            return None
        return _Outgoing(producer, self.topic, self._partitions, self._request_timeout, self)

    async def _send(self, records: Sequence[Record]) -> list[Record]:
        """Send records as per-partition batches; return those the broker did not take."""
        outgoing = self._outgoing()
        if outgoing is None:
            raise RuntimeError("_send() before the producer started")
        await outgoing.add(records)
        await outgoing.finish()
        return await outgoing.settle()

    def _log_send_failure(self, exc: BaseException) -> None:
        self.send_failures += 1
        # After a failure the broker may have restarted or the topic changed:
        # read the partitions again before the next replay.
        self._metadata_stale = True
        if not self._spooling:
            log.warning("Kafka send failed; spooling clicks", extra={"error": repr(exc)})

    async def _refresh_partitions(self) -> bool:
        """Ask the broker for the topic's partitions again; False if it does not answer."""
        producer = self._producer
        if producer is None:
            return False
        try:
            async with asyncio.timeout(self._request_timeout):
                if not await producer.client.force_metadata_update():
                    return False
                partitions = await producer.partitions_for(self.topic)
        except SEND_ERRORS:
            return False
        if not partitions:
            return False
        self._partitions = len(partitions)
        self._metadata_stale = False
        return True

    async def _replay_loop(self) -> None:
        retry = Retry(_RETRY, on=SEND_ERRORS)
        while True:
            await self._replay_wakeup.wait()
            await asyncio.to_thread(self._spool.sync)
            if self._producer is None:
                # The connection task is retrying: look again after its first wait.
                await asyncio.sleep(_RETRY.first)
                continue
            if self._metadata_stale and not await self._refresh_partitions():
                await retry.wait()
                continue
            spool = self._adopted[0] if self._adopted else self._spool
            records, offset = spool.read(_REPLAY_BATCH)
            if not records:
                replayed_some = offset > 0
                spool.commit(offset)
                if spool is self._spool:
                    self._spooling = False
                    self._replay_wakeup.clear()
                    if replayed_some:
                        log.info("click spool replayed; publishing directly again")
                elif journal_path(spool.path.parent, spool.path.stem).exists():
                    # Its journal keeps clicks it could not take: adopted again next start.
                    self._adopted.pop(0).close()
                else:
                    self._adopted.pop(0).remove()
                continue
            failed = await self._send(records)
            if failed:
                await retry.wait()
                continue
            retry.succeeded()
            spool.commit(offset)
            self.replayed += len(records)
            self.published += len(records)


class _Outgoing:
    """Records on their way to the broker: one open record batch per partition,
    the batches handed to the producer, and what the broker did not take."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        partitions: int,
        request_timeout: float,
        publisher: ClickPublisher,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._partitions = partitions
        self._request_timeout = request_timeout
        self._publisher = publisher
        self._open: dict[int, tuple[Any, list[Record]]] = {}
        self._in_flight: list[tuple[Any, list[Record]]] = []
        self._unsent: list[Record] = []
        self.sent = 0  # records handed over (acknowledged or not)

    async def add(self, records: Sequence[Record]) -> None:
        for record in records:
            partition = partition_for(record[0], self._partitions)
            for _ in range(2):
                opened = self._open.get(partition)
                if opened is None:
                    opened = self._open[partition] = (self._producer.create_batch(), [])
                builder, taken = opened
                key, timestamp_ms, value = record
                if builder.append(key=key, value=value, timestamp=timestamp_ms) is not None:
                    taken.append(record)
                    break
                if not taken:  # larger than a whole batch: the broker would refuse it too
                    self._unsent.append(record)
                    break
                await self._ship(partition)  # full (max_batch_size): a new batch for the rest

    async def finish(self) -> None:
        """Hand every open batch to the producer."""
        for partition in list(self._open):
            await self._ship(partition)

    async def _ship(self, partition: int) -> None:
        builder, taken = self._open[partition]
        try:
            # The batch stays open (unconfirmed) until the producer has it: a cancel or an
            # unexpected error while it waits for room leaves it to be spooled.
            future = await self._producer.send_batch(builder, self._topic, partition=partition)
        except SEND_ERRORS as exc:
            del self._open[partition]
            self._publisher._log_send_failure(exc)
            self._unsent.extend(taken)
            return
        del self._open[partition]
        self.sent += len(taken)
        self._in_flight.append((future, taken))

    async def settle(self) -> list[Record]:
        """Wait for the broker; return the records it did not take."""
        while self._in_flight:
            future, sent = self._in_flight[0]
            try:
                await asyncio.wait_for(asyncio.shield(future), self._request_timeout + 1)
            except SEND_ERRORS as exc:
                self._publisher._log_send_failure(exc)
                self._unsent.extend(sent)
                self.sent -= len(sent)
            self._in_flight.pop(0)
        return self._unsent

    def unconfirmed(self) -> list[Record]:
        """Records not known to be acknowledged: open, in flight or refused."""
        pending = [r for _, taken in self._open.values() for r in taken]
        for future, sent in self._in_flight:
            if not future.done():
                # Spooled now; whatever the broker answers later is read and dropped
                # (else asyncio logs "Future exception was never retrieved").
                future.add_done_callback(_drop_outcome)
                pending.extend(sent)
            elif future.cancelled() or future.exception() is not None:
                pending.extend(sent)
        return pending + self._unsent


def _drop_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _recover_journal(spool: Spool) -> tuple[int, bool]:
    """Move the clicks a killed worker left in the journal of `spool` to that spool (with
    their event ids: whatever the broker had already taken is recorded once); how many,
    and whether the journal is gone. It stays while the spool refused some of its clicks
    (full, or a failed write) or they are not on disk yet: a later start moves them again."""
    path = journal_path(spool.path.parent, spool.path.stem)
    records: list[Record] = []
    try:
        records = recover(path)
        if records:
            kept = spool.append(records)
            spool.sync()  # on disk before the journal goes (its pages may be there already)
            log.warning(
                "clicks of a worker that stopped without flushing moved from its journal "
                "to the spool",
                extra={
                    "journal": str(path),
                    "clicks": len(records),
                    "refused": len(records) - kept,
                },
            )
            if kept < len(records):
                return len(records), False
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.error(
            "cannot move the click journal to the spool",
            extra={"journal": str(path), "error": repr(exc)},
        )
        return len(records), not records
    return len(records), True


PUBLISHER = web.AppKey("click_publisher", ClickPublisher)


def spool_name(worker_index: int) -> str:
    """The spool file of a redirect worker: one per worker index of a deployment."""
    return f"redirect-{worker_index}"


def publisher_context(
    config: RedirectConfig, worker_index: int
) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx: the click publisher of one redirect worker; flushes on exit."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        bootstrap_servers = config.service.kafka_bootstrap_servers
        if bootstrap_servers is None:
            raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS must be resolved before a service starts")
        publisher = ClickPublisher(
            bootstrap_servers=bootstrap_servers,
            topic=config.service.click_topic,
            buffer_limit=config.publish_buffer_events,
            linger=config.publish_linger,
            request_timeout=config.kafka_request_timeout,
            spool_dir=config.spool_dir,
            spool_name=spool_name(worker_index),
            spool_max_bytes=config.spool_max_bytes,
            supervisor=app[SUPERVISOR],
            sibling_spools=[spool_name(i) for i in range(config.workers)],
            journal_bytes=config.publish_journal_bytes,
        )
        await publisher.start()
        app[PUBLISHER] = publisher
        try:
            yield
        finally:
            await publisher.close(config.shutdown_timeout)

    return context
