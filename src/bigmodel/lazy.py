"""Names a package exports but imports on first use (PEP 562 module ``__getattr__``).

torch alone takes ~1.5 s to import here. Packages whose verbs do not all need it (``bigmodel``
itself, ``data``, ``train``, ``online``, ``explain``, ``serve``) export their heavy names through
``lazy_exports`` so that ``bigmodel --help``, ``bigmodel data stats`` or ``bigmodel registry list``
start in a fraction of a second.

A lazily exported name must not also be the name of one of the package's submodules: importing
the submodule sets that attribute on the package, and it would then shadow the export. Packages
install the hooks under ``if not TYPE_CHECKING``: mypy would type every unknown name as Any.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``exports[name]`` (a module path) is
    imported the first time ``name`` is looked up, and the value cached on the package; ``dir()``
    (tab completion, ``help``) lists the lazy names too."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
