"""Paced taps that count every answer by status, second by second (for `make chaos`).

Two kinds of load:

- **wrk**, paced like `make bench-system` (each connection waits after each
  answer; a phone's User-Agent; the wait tuned each second towards the rate
  asked), with a Lua tail that counts the requests sent
  and the answers by status per wall-clock second into a file, and stops
  sending at a given second so that every request sent before it is answered
  (or known unanswered) when wrk exits: the 302s it counts are then exactly
  the taps the server redirected.
- **raw taps** over raw sockets (`RawTaps`), so the bytes really are invalid: a
  fresh connection per tap, open-loop at a fixed rate. The *malformed taps*
  cycle through a fixed list of variants (invalid UTF-8, an 8 KiB User-Agent,
  garbage X-Forwarded-For); loadtests/hostile.py makes the hostile ones.

Both give a `Tally`: counts by (second, status), 0 for a tap that got no answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .bench_system import PHONE, SCRIPT_HEAD, paced_connections
from .wrk import WrkResult, parse_wrk

NO_ANSWER = 0  # the status of a tap that got no answer (reset, refused, timed out)
# After the stop second each connection idles; wrk runs this much longer so the
# last answers arrive before it exits.
WRK_GRACE = 5
_NEVER_MS = 3_600_000
# Appended to SCRIPT_HEAD and a request() body of bench_system: counts sent
# requests and answers by status per second, and stops sending at `stop_at`.
COUNTING = """
local stop_at = %d
local out_path = "%s"
local sent, answered = {}, {}
local written_at = 0
local function dump()
  local f = io.open(out_path, "w")
  for s, n in pairs(sent) do f:write("sent ", s, " ", n, "\\n") end
  for s, row in pairs(answered) do
    for status, n in pairs(row) do f:write("status ", s, " ", status, " ", n, "\\n") end
  end
  f:close()
end
-- The fixed delay, tuned once a second by what the last second achieved: slow answers
-- then cost the offered rate little (each connection waits delay + answer time).
local target = %d
local pace = delay()
local tuned_at = 0
delay = function()
  local s = os.time()
  if s >= stop_at then
    dump()
    return %d
  end
  if s ~= tuned_at then
    local last = sent[s - 1]
    if tuned_at ~= 0 and last ~= nil and last > 0 then
      pace = math.max(1, pace * math.max(0.5, math.min(2, last / target)))
    end
    tuned_at = s
  end
  return math.floor(pace + 0.5)
end
-- wrk calls request() once before the run to check what it builds: not a tap.
local make, checked = request, false
request = function()
  if not checked then
    checked = true
    return make()
  end
  local s = os.time()
  sent[s] = (sent[s] or 0) + 1
  return make()
end
response = function(status, headers, body)
  local s = os.time()
  local row = answered[s]
  if row == nil then row = {}; answered[s] = row end
  row[status] = (row[status] or 0) + 1
  if s ~= written_at then
    written_at = s
    dump()
  end
end
"""


@dataclass
class Tally:
    """Answers by (second, status) and requests sent by second.

    wrk counts a request when it is sent and its answer when it arrives, possibly in a
    later second, so over a span of seconds "sent minus answered" is the requests lost
    plus the change in those in flight: up to `slack` (wrk's connections, each has at
    most one in flight) either way. Over the whole run, which ends with nothing in
    flight, it is exact.
    """

    answers: Counter[tuple[int, int]] = field(default_factory=Counter)
    sent: Counter[int] = field(default_factory=Counter)
    slack: int = 0

    def between(self, start: float, end: float) -> Counter[int]:
        """Answers by status in the whole seconds [start, end); requests unanswered, as
        status 0, when more than `slack` of them are."""
        return self._between(int(start), int(end), self.slack)

    def total(self) -> Counter[int]:
        return self._between(0, 1 << 40, 0)

    def _between(self, first: int, last: int, slack: int) -> Counter[int]:
        found: Counter[int] = Counter()
        for (second, status), n in self.answers.items():
            if first <= second < last:
                found[status] += n
        missing = sum(n for s, n in self.sent.items() if first <= s < last) - found.total()
        if missing > slack:
            found[NO_ANSWER] += missing
        return found

    def last_bad_second(self, start: float, end: float) -> int | None:
        """The last second in [start, end) with an answer other than 302, or with more
        requests unanswered than could be in flight."""
        first, last = int(start), int(end)
        answered: Counter[int] = Counter()
        bad = []
        for (second, status), n in self.answers.items():
            answered[second] += n
            if first <= second < last and status != 302 and n:
                bad.append(second)
        for second, n in self.sent.items():
            if first <= second < last and n - answered[second] > self.slack:
                bad.append(second)
        return max(bad) if bad else None


@dataclass
class WrkRun:
    name: str
    process: asyncio.subprocess.Process
    counts: Path
    connections: int

    async def finish(self) -> tuple[WrkResult, str, Tally]:
        """wrk's summary, its socket errors line (or ""), and the per-second counts."""
        out, _ = await self.process.communicate()
        text = out.decode()
        errors = re.search(r"Socket errors: (.*)", text)
        tally = read_counts(self.counts)
        tally.slack = self.connections
        return parse_wrk(text), errors[1] if errors else "", tally


def wrk_script(
    work: Path, name: str, body: str, tokens: Path, rate: int, stop_at: int
) -> tuple[Path, int]:
    """A paced, counting wrk script for `rate` taps/s; returns it and its connections."""
    # Each connection waits ~50 ms between taps (bench_system: ~20 ms), so a slow answer
    # under a fault costs the pacing less.
    connections = paced_connections(rate, max(2, rate // 20))
    # As in bench_system: the delay runs after each answer (~0.7 ms here).
    delay = max(1, round(connections * 1000 / rate - 0.7))
    script = work / f"{name}.lua"
    counts = work / f"{name}.counts"
    script.write_text(
        SCRIPT_HEAD % (tokens, PHONE, delay)
        + body % ()
        + COUNTING % (stop_at, counts, rate, _NEVER_MS)
    )
    return script, connections


async def start_wrk(
    name: str,
    url: str,
    script: Path,
    connections: int,
    seconds: int,
    prefix: tuple[str, ...] = (),
) -> WrkRun:
    """wrk -t1 in the background for `seconds` plus the grace period (`prefix`: the command
    it runs under, as `ip netns exec load` for make cluster-chaos)."""
    process = await asyncio.create_subprocess_exec(
        *prefix,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds + WRK_GRACE}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
    )
    return WrkRun(name, process, script.with_suffix(".counts"), connections)


def read_counts(path: Path) -> Tally:
    """The counts file the Lua tail wrote."""
    tally = Tally()
    if not path.exists():
        return tally
    for line in path.read_text().splitlines():
        kind, *numbers = line.split()
        if kind == "sent":
            tally.sent[int(numbers[0])] += int(numbers[1])
        elif kind == "status":
            tally.answers[int(numbers[0]), int(numbers[1])] += int(numbers[2])
    return tally


@dataclass
class RawTaps:
    """Taps over raw sockets, a fresh connection each, open-loop at `rate` per second:
    tap n is the request `make(n)` returns with its variant's name. Counted into `tally`
    (sent and answered both at the second the tap was sent: exact) and by variant."""

    port: int
    rate: float
    make: Callable[[int], tuple[str, bytes]]
    variants: list[str]
    tally: Tally = field(default_factory=Tally)
    by_variant: dict[str, Counter[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.variants:
            self.by_variant.setdefault(name, Counter())

    async def run(self, until: float) -> None:
        """Tap until `until` (Unix time), then wait for the last answers."""
        if self.rate <= 0:
            return
        pending: set[asyncio.Task[None]] = set()
        failed: list[BaseException] = []

        def finished(task: asyncio.Task[None]) -> None:
            pending.discard(task)
            if not task.cancelled() and (error := task.exception()) is not None:
                failed.append(error)  # a tap that raised: the tally would be short

        due, sent = time.time(), 0
        while due < until:
            await asyncio.sleep(max(0.0, due - time.time()))
            # Made here, in order, so that random parts repeat with their seed.
            name, request = self.make(sent)
            task = asyncio.create_task(self._tap(name, request))
            pending.add(task)
            task.add_done_callback(finished)
            sent += 1
            due += 1 / self.rate
        if pending:
            await asyncio.wait(pending)
        if failed:
            raise RuntimeError(f"{len(failed)} taps failed") from failed[0]

    async def _tap(self, name: str, request: bytes) -> None:
        second = int(time.time())
        self.tally.sent[second] += 1
        status, _ = await raw_exchange(self.port, request, 15)
        if status != NO_ANSWER:
            self.tally.answers[second, status] += 1
        self.by_variant.setdefault(name, Counter())[status] += 1


async def raw_exchange(port: int, request: bytes, within: float) -> tuple[int, float]:
    """Send `request` on a fresh connection to 127.0.0.1:`port`; the answer's status
    (NO_ANSWER if none came `within` seconds) and the seconds it took. Only the
    status line is read: an answer of any size costs the client nothing."""
    started = time.monotonic()
    status = NO_ANSWER
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # A server may answer and close before it has read everything (an oversized
            # header): its answer is still in our receive buffer.
            with contextlib.suppress(ConnectionError):
                writer.write(request)
                await writer.drain()
            line = await reader.readline()
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            status = int(parts[1])
    except (OSError, TimeoutError):
        pass
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return status, time.monotonic() - started


PHONE_BYTES = PHONE.encode()
# Each malformed tap is one of these header sets (after the request line and Host).
VARIANTS: dict[str, tuple[bytes, ...]] = {
    "user agent invalid UTF-8": (b"User-Agent: " + PHONE_BYTES + b" \xff\xfe",),
    "referer invalid UTF-8": (b"User-Agent: " + PHONE_BYTES, b"Referer: https://sms.example/\xc3("),
    "user agent 8 KiB": (b"User-Agent: " + PHONE_BYTES + b"A" * (8192 - len(PHONE_BYTES)),),
    "x-forwarded-for garbage": (
        b"User-Agent: " + PHONE_BYTES,
        b"X-Forwarded-For: not-an-ip, 999.1.1.1, \xff\xfe, [::1",
    ),
    "user agent Latin-1": (b"User-Agent: " + PHONE_BYTES + b" caf\xe9",),
}


def malformed_request(name: str, token: str) -> bytes:
    """The malformed tap `name` on `token`, as sent."""
    lines = [
        b"GET /" + token.encode() + b" HTTP/1.1",
        b"Host: 127.0.0.1",
        *VARIANTS[name],
        b"Connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def malformed_taps(port: int, tokens: list[str], rate: float) -> RawTaps:
    """Taps cycling through VARIANTS and `tokens`."""
    names = list(VARIANTS)

    def make(n: int) -> tuple[str, bytes]:
        name = names[n % len(names)]
        return name, malformed_request(name, tokens[n % len(tokens)])

    return RawTaps(port, rate, make, names)
