"""Schemathesis against the running API, from the OpenAPI document it serves.

The API runs in the test's event loop on the session's real database, as a fresh
account; schemathesis' own command line fuzzes every operation with valid and
invalid data (its pytest plugin does not run under pytest 9). No answer may be a
5xx, valid requests must be accepted and invalid ones refused: the document
states exactly what the code enforces (fuzz_hooks.py adds the two rules only a
description can state). Generation is deterministic and bounded, so a run
cannot flake and stays short.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import orjson

from shortlink.api.app import openapi_document
from tests.infra import RunningServer
from tests.shortlink.api.conftest import Tenant

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
HOOKS = Path(__file__).with_name("fuzz_hooks.py")
CHECKS = "not_a_server_error,positive_data_acceptance,negative_data_rejection"
MAX_EXAMPLES = 50
WITHIN_SECONDS = 600


async def test_every_operation_answers_as_documented(
    api_server: RunningServer, tenant: Tenant, tmp_path: Path
) -> None:
    """No 5xx; requests the document allows are accepted and those it forbids are refused."""
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "run",
        f"{api_server.url}/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {tenant.key}",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--mode",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
        "--report-dir",
        str(tmp_path),
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(WITHIN_SECONDS):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    report = output.decode(errors="replace")
    assert process.returncode == 0, report
    # Not vacuous: every operation was tried (all but the route of the document
    # itself, which schemathesis leaves out), with many cases.
    operations = sum(
        method != "parameters"
        for path, item in orjson.loads(openapi_document())["paths"].items()
        if path != "/v1/openapi.json"
        for method in item
    )
    assert f"Tested: {operations}\n" in report, report
    generated = re.search(r"(\d+) generated, (\d+) passed", report)
    assert generated is not None, report
    assert int(generated[1]) == int(generated[2]) >= 10 * operations, report
