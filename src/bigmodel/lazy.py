"""Names a package exports but imports on first use (PEP 562 module ``__getattr__``).

torch alone takes ~1.5 s to import here. Packages whose verbs do not all need it (``bigmodel``
itself, ``data``, ``train``, ``online``, ``explain``, ``registry``) export their heavy names
through ``lazy_exports`` so that ``bigmodel --help``, ``bigmodel data stats`` or
``bigmodel registry list`` start in a fraction of a second.

A lazily exported name must not also be the name of one of the package's submodules: importing
the submodule sets that attribute on the package, and it would then shadow the export.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``exports[name]`` (a module path)
    the first time ``name`` is looked up, and caches the value on the package."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
