"""The `forwarder` command: `forwarder run [--host H] [--port P] [--workers N]`.

With no DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS it uses the embedded servers, as
every shortlink command does.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
from collections.abc import Sequence

from forwarder.config import ForwarderConfig
from shortlink import logs
from shortlink.dev.embedded import resolve_service
from shortlink.exceptions import STARTUP_ERRORS
from shortlink.serve import EXIT_CONFIG, run_in_process, run_workers


def _worker(config: ForwarderConfig, index: int) -> int:
    from forwarder.app import create_app
    from shortlink.serve import serve

    logs.configure(config.service.log_level)
    config = config.worker(index)
    return run_in_process(
        lambda: serve(
            create_app(config),
            host=config.host,
            port=config.port,
            shutdown_timeout=config.shutdown_timeout,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="forwarder", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="consume clicks, record them, deliver them")
    run.add_argument("--host", help="address of the health endpoints (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port of the health endpoints (default 8082)")
    run.add_argument("--workers", type=int, help="processes in the consumer group (default 1)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    try:
        config = ForwarderConfig.from_env(env)
        logs.configure(config.service.log_level)
        config = dataclasses.replace(
            config,
            service=resolve_service(config.service, kafka=True),
            host=args.host or config.host,
            port=config.port if args.port is None else args.port,
            workers=args.workers or config.workers,
        )
    except STARTUP_ERRORS as exc:
        sys.stderr.write(f"forwarder: {exc}\n")
        return EXIT_CONFIG
    if config.workers == 1:
        return _worker(config, 0)
    return run_workers(functools.partial(_worker, config), config.workers, "forwarder")


if __name__ == "__main__":
    sys.exit(main())
