"""The exception trees drawn in the docstrings of shortlink.exceptions and forwarder.exceptions."""

from __future__ import annotations

import inspect
import re
from types import ModuleType

import pytest

import forwarder.exceptions
import shortlink.exceptions


def drawn_tree(module: ModuleType) -> dict[str, str | None]:
    """Each class name drawn in the module's docstring, with the name drawn as its parent."""
    parents: dict[str, str | None] = {}
    path: list[str] = []
    for line in (module.__doc__ or "").splitlines():
        branch = re.match(r"^ {4}((?:[│ ] {3})*)[├└]── (\w+)", line)
        root = re.match(r"^ {4}(\w+Error)\b", line)
        if branch is not None:
            depth = len(branch.group(1)) // 4 + 1
            del path[depth:]
            parents[branch.group(2)] = path[depth - 1]
            path.append(branch.group(2))
        elif root is not None and not path:
            path.append(root.group(1))
            parents[root.group(1)] = None
    return parents


@pytest.mark.parametrize("module", [shortlink.exceptions, forwarder.exceptions])
def test_docstring_draws_every_exception_under_its_base(module: ModuleType) -> None:
    """Every exception class of the module is drawn in its docstring, under its first base."""
    drawn = drawn_tree(module)
    defined = {
        name: cls
        for name, cls in vars(module).items()
        if inspect.isclass(cls)
        and issubclass(cls, BaseException)
        and cls.__module__ == module.__name__
    }
    assert set(defined) <= set(drawn)
    for name, cls in defined.items():
        parent = drawn[name]
        if parent is None:
            assert cls.__bases__ == (Exception,)
        else:
            assert cls.__bases__[0].__name__ == parent, name
            assert issubclass(cls, shortlink.exceptions.ShortlinkError)
