"""The processes a benchmark runs on this machine: CPU pinning, starting and stopping
them, waiting until they answer, and what they cost (CPU time, memory, a metric's value)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

# Servers on one core, the load generator (and the broker) on the other.
SERVER_CPU = "0"
LOAD_CPU = "1"


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (field 3 on: state, ppid, ...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """`pid` and its child processes (a postmaster and its backends)."""
    found = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    return [pid, *(int(p) for p in found)]


def postmaster_of(backend: int) -> int | None:
    """The parent of a PostgreSQL backend if this machine runs it (/proc), else None."""
    try:
        parent = int(_stat(backend)[1])
        command = Path(f"/proc/{parent}/comm").read_text().strip()
    except OSError:  # not this machine's process
        return None
    return parent if command.startswith("postgres") else None


def local_postmaster(database_url: str) -> int | None:
    """The postmaster of the PostgreSQL server at `database_url` if it runs on this machine
    (the parent of a backend of ours, read while it lives), else None: a given
    DATABASE_URL's server CPU is measured then too."""
    import asyncio

    import asyncpg

    async def postmaster() -> int | None:
        conn = await asyncpg.connect(database_url)
        try:
            return postmaster_of(await conn.fetchval("SELECT pg_backend_pid()"))
        finally:
            await conn.close()

    return asyncio.run(postmaster())


def tree_cpu_seconds(pid: int) -> float:
    """CPU time so far of `pid` and its children (those that exited in between are missed)."""
    total = 0.0
    for member in children(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(member)
    return total


def start_profiler(pid: int, seconds: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy recording collapsed stacks of `pid` for `seconds` (needs root or ptrace rights)."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own URL
                if response.status == 200:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


@contextlib.contextmanager
def process(
    argv: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, stopped (SIGTERM, then SIGKILL) on exit; with `log`, its stdout and
    stderr are appended to that file, else stdout is dropped and stderr inherited."""
    with contextlib.ExitStack() as files:
        output = files.enter_context(open(log, "ab")) if log is not None else None
        child = subprocess.Popen(
            argv,
            env=env,
            stdout=output or subprocess.DEVNULL,
            stderr=output,
        )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def metric(url: str, name: str) -> float:
    """The sum of a metric's samples on a Prometheus page."""
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own URL
        text = response.read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))
