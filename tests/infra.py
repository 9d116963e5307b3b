"""The real servers tests run against: database naming, Kafka reading, in-process services."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from prometheus_client.parser import text_string_to_metric_families

from shortlink.endpoints import Resolver
from shortlink.kafka import Holes, contiguous
from shortlink.serve import Handler, serve


def shortlink(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `shortlink` command line with `env` added to the environment."""
    return subprocess.run(
        [sys.executable, "-m", "shortlink.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


END_KEY = b"tests.infra:end"


async def consume(
    bootstrap_servers: str,
    topic: str,
    count: int,
    *,
    within: float = 30.0,
    to_end: bool = False,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read `topic` from the beginning until `count` records arrived (or `within` s passed).

    With `to_end`, then put an end marker on every partition and read on until each
    marker is back: the records returned are all that the broker held before them, so
    a test sees records that should not be there without waiting a fixed time (the
    producers must be done first). Read as the forwarder reads, through
    shortlink.kafka.contiguous (the broker may serve a later batch first).
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    ends = 0
    holes = Holes()

    async def more(timeout_ms: int) -> None:
        nonlocal ends
        batches = await consumer.getmany(timeout_ms=timeout_ms)
        for batch in (await contiguous(consumer, batches, holes, grouped=False)).values():
            for record in batch:
                if record.key == END_KEY:
                    ends += 1
                else:
                    records.append(record)

    try:
        deadline = time.monotonic() + within
        while len(records) < count and time.monotonic() < deadline:
            await more(300)
        if to_end:
            partitions = await put_end_markers(bootstrap_servers, topic)
            end_deadline = time.monotonic() + 30
            while ends < partitions:
                if time.monotonic() > end_deadline:
                    raise AssertionError(f"the end markers of {topic} did not come back")
                await more(200)
    finally:
        await consumer.stop()
    return records


async def put_end_markers(bootstrap_servers: str, topic: str) -> int:
    """One END_KEY record on every partition of `topic`; how many partitions it has."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        sent = [await producer.send(topic, value=b"", key=END_KEY, partition=p) for p in partitions]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return len(partitions)


@dataclass
class RunningServer:
    app: web.Application
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def running(
    app: web.Application,
    make_handler: Callable[[web.Application], Handler] | None = None,
    *,
    shutdown_timeout: float = 5.0,
) -> AsyncIterator[RunningServer]:
    """Serve `app` on a free port of 127.0.0.1 inside the test's event loop."""
    stop = asyncio.Event()
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(
            app,
            host="127.0.0.1",
            port=0,
            shutdown_timeout=shutdown_timeout,
            make_handler=make_handler,
            started=started.set_result,
            stop=stop,
            handle_signals=False,
        )
    )
    done, _ = await asyncio.wait({task, started}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises what stopped the start
        raise RuntimeError("server returned before it started")
    if started not in done:
        task.cancel()
        raise RuntimeError("server did not start within 60 s")
    try:
        yield RunningServer(app, started.result())
    finally:
        stop.set()
        await task


def statuses_of(raw: bytes) -> list[int]:
    """The status of every response in `raw`, in order, bodies skipped (a request line
    without a version is answered too, as "HTTP/0.9 302 Found")."""
    found = []
    while raw:
        head, separator, rest = raw.partition(b"\r\n\r\n")
        if not separator:
            break
        lines = head.split(b"\r\n")
        match = re.match(rb"HTTP/\d\.\d (\d{3})", lines[0])
        if match is None:
            break
        found.append(int(match[1]))
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        raw = rest[length:]
    return found


async def exchange(server: RunningServer, data: bytes) -> list[int]:
    """Write `data` on a fresh connection; the statuses answered until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    received = b""
    try:
        # The server may answer and close before it has read everything (a 100 KiB
        # header): what it answered is still in our receive buffer.
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(ConnectionError):
            received = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return statuses_of(received)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """A urllib handler that hands redirects back instead of following them."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def status_of(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, str | None]:
    """The status and Location of a GET of `url` from a process's server, not followed."""
    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 - our server
    try:
        with opener.open(request, timeout=5) as response:
            return int(response.status), response.headers["Location"]
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Location"]


async def tap(server: RunningServer, token: str, **headers: str) -> int:
    """Tap a short link as a phone would (one GET, redirect not followed); the status."""
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{server.url}/{token}", headers=headers, allow_redirects=False
        ) as response:
            return response.status


def env_for(base: Mapping[str, str], **overrides: Any) -> dict[str, str]:
    """An environment mapping: `base` plus overrides rendered as strings."""
    return {**base, **{key: str(value) for key, value in overrides.items()}}


async def publish_events(
    bootstrap_servers: str, topic: str, values: list[tuple[str, bytes]]
) -> None:
    """Put (token, encoded click event) pairs on the topic, as the redirect server would."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=token.encode()) for token, value in values
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def wait_until(
    condition: Callable[[], object],
    within: float = 30.0,
    step: float = 0.05,
    *,
    what: str | None = None,
) -> None:
    """Poll `condition` (a function, or a coroutine function) until it is true.

    AssertionError after `within` seconds, naming `what` (or the condition's
    source line) and the last value it returned.
    """
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not met within {within:g} s: {what or _describe(condition)} (last: {value!r})"
            )
        await asyncio.sleep(step)


def _describe(condition: Callable[[], object]) -> str:
    """The source line of the condition (a lambda shows itself), for a failure message."""
    try:
        return inspect.getsource(condition).strip().splitlines()[0]
    except (OSError, TypeError, IndexError):
        return getattr(condition, "__qualname__", repr(condition))


async def all_published(server: RunningServer) -> None:
    """Wait until the redirect server's publisher has sent every click it was given."""
    from shortlink.redirect.publisher import PUBLISHER

    publisher = server.app[PUBLISHER]
    await wait_until(
        lambda: publisher.published == publisher.submitted,
        what="every submitted click published",
    )


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, by sample name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class DatabaseProxy:
    """A TCP proxy in front of PostgreSQL, to make a connection die without telling.

    `freeze()` stops forwarding on every connection open at that moment (the
    sockets stay open: the peer hears nothing, as after a failover or a NAT
    timeout); later connections work. `cut()` freezes them and accepts later ones
    that are never answered either (a host cut off). With `refusing`, new
    connections are closed at once (counted in `refused`). `url` is the database
    URL through the proxy.
    """

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        query = parse_qs(parts.query)
        self._socket_dir = query.get("host", [None])[0]
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 5432
        self._parts = parts
        self._frozen: set[asyncio.Task[None]] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.refusing = False
        self.cut_off = False
        self._stopped = asyncio.Event()
        self.refused = 0  # connections closed at once because of `refusing`
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        user = self._parts.username or ""
        password = f":{self._parts.password}" if self._parts.password else ""
        self.url = f"postgresql://{user}{password}@127.0.0.1:{port}{self._parts.path}"
        return self.url

    async def _upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._socket_dir is not None:
            path = f"{self._socket_dir}/.s.PGSQL.{self._port}"
            return await asyncio.open_unix_connection(path)
        return await asyncio.open_connection(self._host, self._port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.refused += 1
            writer.close()
            return
        if self.cut_off:
            self._writers.append(writer)
            await self._stopped.wait()
            return
        up_reader, up_writer = await self._upstream()
        self._writers += [writer, up_writer]
        pipes = {
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        }
        self._pipes |= pipes
        outcomes = await asyncio.gather(*pipes, return_exceptions=True)
        self._pipes -= pipes
        for outcome in outcomes:  # a pipe's own failure (not its stop) reaches asyncio's log
            if isinstance(outcome, Exception):
                raise outcome

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if task in self._frozen:
                    await asyncio.Event().wait()  # silent until the test stops the proxy
                writer.write(data)
                await writer.drain()
        writer.close()

    def freeze(self) -> None:
        """Silence every connection open now."""
        self._frozen |= self._pipes

    def cut(self) -> None:
        """Silence every connection, open now or later."""
        self.freeze()
        self.cut_off = True

    async def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.close()
        for task in self._pipes:
            task.cancel()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._pipes, return_exceptions=True)


class SilentResolver(Resolver):
    """A DNS resolver that never answers (as behind a server that drops every query);
    `asked` lists the hosts it was asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class OfflineResolver(Resolver):
    """A DNS resolver that answers every host name with 127.0.0.1 without asking the
    network: deterministic, and as fast for a random name as for a real one. `asked`
    holds the hosts it was asked for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.add(host)
        return ["127.0.0.1"]
