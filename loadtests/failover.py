"""PostgreSQL as an HA pair under pg_auto_failover, for `make cluster` (docs/choices.md).

A monitor host and two data hosts, each a `pg_autoctl ... --run` keeper (it runs
and watches its PostgreSQL) as the `postgres` user with Debian's PostgreSQL 15, data
and sockets in the run's folder and port 25432 in its own namespace (the machine's
PostgreSQL and its /var/run/postgresql are left alone). The first data node becomes
the primary, the second its streaming replica; the monitor promotes the replica
when the primary fails its health checks (tuned here to notice in ~5 s) and the
old primary rejoins as a replica. Services connect with the multi-host URL
(`target_session_attrs=read-write`), so a failover needs no reconfiguration.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .netns import Network

PGBIN = Path("/usr/lib/postgresql/15/bin")
# Each its own port, and every socket in the run's folder: a PostgreSQL started by
# pg_autoctl puts its socket in the compiled default, /var/run/postgresql, the machine's
# own PostgreSQL's; so the first two are made here with unix_socket_directories set,
# and the replica copies it from the primary.
PORTS = {"pg-monitor": 25431, "pg1": 25432, "pg2": 25433}
DATABASE = "shortlink"
# The monitor's health checks: every second, a node unhealthy after 5 s of failures.
MONITOR_SETTINGS = {
    "pgautofailover.health_check_period": "1000",
    "pgautofailover.health_check_timeout": "1000",
    "pgautofailover.health_check_max_retries": "1",
    "pgautofailover.health_check_retry_delay": "500",
    "pgautofailover.node_considered_unhealthy_timeout": "5000",
    # How long the monitor waits for an unreachable primary to demote itself before it
    # promotes the replica (30 s by default).
    "pgautofailover.primary_demote_timeout": "10000",
}


def installed() -> str | None:
    """Why pg_auto_failover cannot run here, or None."""
    if shutil.which("pg_autoctl") is None:
        return "pg_autoctl is missing: apt-get install postgresql-15-auto-failover"
    if not (PGBIN / "postgres").exists():
        return f"{PGBIN}/postgres is missing: apt-get install postgresql-15"
    return None


@dataclass
class Failover:
    """The monitor and the two data nodes of one run."""

    net: Network
    work: Path
    keepers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def monitor_uri(self) -> str:
        address = self.net.hosts["pg-monitor"]
        port = PORTS["pg-monitor"]
        return f"postgres://autoctl_node@{address}:{port}/pg_auto_failover?sslmode=disable"

    @property
    def url(self) -> str:
        """The services' DATABASE_URL: whichever node is the primary."""
        return f"postgresql://postgres@{self._hosts}/{DATABASE}?target_session_attrs=read-write"

    @property
    def read_url(self) -> str:
        """DATABASE_READ_URL: the replica when there is one, else the primary."""
        return f"postgresql://postgres@{self._hosts}/{DATABASE}?target_session_attrs=prefer-standby"

    @property
    def _hosts(self) -> str:
        return ",".join(f"{self.net.hosts[n]}:{PORTS[n]}" for n in ("pg1", "pg2"))

    @property
    def sockets(self) -> Path:
        return self.work / "sockets"

    def _env(self, name: str) -> list[str]:
        home = self.work / name
        return [
            "env",
            f"PATH={PGBIN}:/usr/bin:/bin",
            f"PGHOST={self.sockets}",
            f"XDG_CONFIG_HOME={home / 'config'}",
            f"XDG_DATA_HOME={home / 'data'}",
            f"XDG_RUNTIME_DIR={home / 'run'}",
        ]

    def _prepare(self, name: str) -> Path:
        home = self.work / name
        for sub in ("config", "data", "run"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        user = pwd.getpwnam("postgres")
        for path in (self.work, self.sockets, home, *home.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
        return home

    def _initdb(self, name: str) -> None:
        """A data folder whose server puts its socket in the run's folder."""
        home = self._prepare(name)
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PGBIN / "initdb"),
                "-D",
                str(home / "pgdata"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        with open(home / "pgdata" / "postgresql.conf", "a") as conf:
            # A replica's base backup waits for a checkpoint: make them short.
            conf.write(
                f"unix_socket_directories = '{self.sockets}'\nlisten_addresses = '*'\n"
                "checkpoint_timeout = '30s'\ncheckpoint_completion_target = 0.5\n"
            )

    def _keeper(self, name: str, args: list[str]) -> None:
        home = self._prepare(name)
        with open(self.work / f"{name}.log", "ab") as log:
            self.keepers[name] = subprocess.Popen(
                [
                    *self.net.exec(name),
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    *self._env(name),
                    "pg_autoctl",
                    *args,
                    "--pgdata",
                    str(home / "pgdata"),
                    "--pgport",
                    str(PORTS[name]),
                    "--hostname",
                    self.net.hosts[name],
                    "--auth",
                    "trust",
                    "--no-ssl",
                    "--run",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def autoctl(self, *args: str) -> str:
        """`pg_autoctl <args>` against the monitor; its output."""
        result = subprocess.run(
            [
                *self.net.exec("pg-monitor"),
                "runuser",
                "-u",
                "postgres",
                "--",
                *self._env("pg-monitor"),
                "pg_autoctl",
                *args,
                "--pgdata",
                str(self.work / "pg-monitor" / "pgdata"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return result.stdout + result.stderr

    def states(self) -> dict[str, str]:
        """Each data node's state as the monitor sees it (reported / assigned)."""
        found = {}
        for line in self.autoctl("show", "state").splitlines():
            cells = [cell.strip() for cell in line.split("|")]
            if len(cells) == 7 and cells[0] in ("pg1", "pg2"):
                found[cells[0]] = f"{cells[5]}/{cells[6]}"
        return found

    def wait_state(self, wanted: dict[str, str], within: float) -> None:
        deadline = time.monotonic() + within
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.states()
            if all(states.get(node) == state for node, state in wanted.items()):
                return
            time.sleep(1.0)
        raise RuntimeError(f"pg_auto_failover: wanted {wanted}, have {states}")

    def start(self) -> None:
        self._initdb("pg-monitor")
        self._keeper("pg-monitor", ["create", "monitor"])
        self._wait_monitor()
        settings = [f"ALTER SYSTEM SET {k} = {v}" for k, v in MONITOR_SETTINGS.items()]
        self._psql("pg-monitor", "pg_auto_failover", *settings, "SELECT pg_reload_conf()")
        self._initdb("pg1")
        self._keeper("pg1", self._node_args("pg1"))
        self.wait_state({"pg1": "single/single"}, 90)
        # Every host of the network may connect (the keepers add only their peers).
        hba = self.work / "pg1" / "pgdata" / "pg_hba.conf"
        with open(hba, "a") as file:
            file.write(f"host all all {self.net.hosts['pg1'].rsplit('.', 1)[0]}.0/24 trust\n")
        self._psql("pg1", "postgres", "SELECT pg_reload_conf()")
        self._keeper("pg2", self._node_args("pg2"))
        self.wait_state({"pg1": "primary/primary", "pg2": "secondary/secondary"}, 120)

    def _node_args(self, name: str) -> list[str]:
        return [
            "create",
            "postgres",
            "--name",
            name,
            "--dbname",
            DATABASE,
            "--monitor",
            self.monitor_uri,
        ]

    def _wait_monitor(self) -> None:
        deadline = time.monotonic() + 60
        while "postgres://autoctl_node@" not in (answer := self.autoctl("show", "uri")):
            keeper = self.keepers["pg-monitor"]
            if time.monotonic() > deadline or keeper.poll() is not None:
                log = (self.work / "pg-monitor.log").read_text(errors="replace")
                raise RuntimeError(
                    f"the pg_auto_failover monitor did not start (keeper exit code "
                    f"{keeper.poll()}); `pg_autoctl show uri` said: {answer.strip()[-500:]}\n"
                    f"its log ends: {log[-3000:]}"
                )
            time.sleep(1.0)

    def _psql(self, name: str, database: str, *statements: str) -> None:
        subprocess.run(
            [
                *self.net.exec(name),
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PGBIN / "psql"),
                "-h",
                str(self.sockets),
                "-p",
                str(PORTS[name]),
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                *(arg for sql in statements for arg in ("-c", sql)),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def stop(self) -> None:
        for keeper in self.keepers.values():
            if keeper.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(keeper.pid, 15)
        for keeper in self.keepers.values():
            try:
                keeper.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(keeper.pid, 9)
                keeper.wait()
