"""Names of a package that load on first use (PEP 562), so that importing the package does
not import what only some of its names need (torch, RLlib)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, modules: dict[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], list[str]]:
    """The module ``__getattr__`` and the sorted names of ``package`` whose values live in
    ``modules`` (submodule → its names); a name is imported once, on its first access, and
    kept in the package's namespace."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        vars(sys.modules[package])[name] = value
        return value

    return __getattr__, sorted(where)
