"""Dependencies: every import is declared, and constraints.txt pins what make install, CI and the
image install."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match is not None, f"not a pin: {line!r}"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def required(name: str, extras: set[str], seen: set[str]) -> None:
    """Add `name` and everything it needs (with `extras`) in this environment to `seen`."""
    for text in metadata.requires(name) or []:
        requirement = Requirement(text)
        if requirement.marker is not None and not any(
            requirement.marker.evaluate({"extra": extra}) for extra in extras or {""}
        ):
            continue
        key = canonicalize_name(requirement.name)
        if key == "shortlink":
            required(name, set(requirement.extras), seen)
        elif key not in seen:
            seen.add(key)
            required(requirement.name, set(requirement.extras), seen)


def test_constraints_pin_every_package_of_the_dev_install() -> None:
    """Each package `pip install -e .[dev]` brings is pinned, at the version installed here."""
    pins = constraints()
    needed: set[str] = set()
    required("shortlink", {"dev"}, needed)
    assert needed - set(pins) == set()
    installed = {name: metadata.version(name) for name in needed}
    assert {name: pins[name] for name in needed} == installed


def test_install_ci_and_image_use_the_constraints() -> None:
    """make install (which make test and .ci/run use) and the Dockerfile pass -c constraints.txt."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(STAMP\): .*constraints\.txt", makefile, re.MULTILINE)
    assert "pip install --quiet -c constraints.txt -e '.[dev]'" in makefile
    assert re.search(r"^test: install\b", makefile, re.MULTILINE)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^COPY .*constraints\.txt", dockerfile, re.MULTILINE)
    assert "pip wheel --wheel-dir /wheels -c constraints.txt ." in dockerfile


def test_every_third_party_import_is_declared() -> None:
    """Modules that shortlink and forwarder import come from packages they declare (yarl too)."""
    declared = {canonicalize_name(Requirement(text).name) for text in PROJECT["dependencies"]}
    distributions = metadata.packages_distributions()
    imported: set[str] = set()
    for package in ("shortlink", "forwarder"):
        for source in (ROOT / package).rglob("*.py"):
            if source.parts[-2] == "dev":  # the local stack needs the embedded extra
                continue
            for node in ast.walk(ast.parse(source.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"shortlink", "forwarder"}
    undeclared = {
        module
        for module in third_party
        if not {canonicalize_name(d) for d in distributions.get(module, [module])} & declared
    }
    assert undeclared == set()


def test_declared_aiohttp_has_request_keys() -> None:
    """The lowest aiohttp the project allows is 3.14, the first with web.RequestKey."""
    [aiohttp] = [
        Requirement(text) for text in PROJECT["dependencies"] if text.startswith("aiohttp")
    ]
    lowest = min(Version(spec.version) for spec in aiohttp.specifier if ">" in spec.operator)
    assert lowest >= Version("3.14")
