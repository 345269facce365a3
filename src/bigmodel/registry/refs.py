"""Model references: ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.

``NAME`` alone means the ``production`` alias when it is set, else the latest version: the same
rule the server uses for its unversioned paths, so ``show iris`` shows what ``/v2/models/iris`` serves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bigmodel.errors import BigModelError

DEFAULT_ALIAS = "production"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
MAX_VERSION = 2**31 - 1  # the registry's version column is a SQL INTEGER


@dataclass(frozen=True)
class Ref:
    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        return f"{self.name}@{self.alias}" if self.alias else self.name


def check_name(name: str) -> str:
    """Model names go into URLs and paths: letters, digits, ``_ . -``, starting with a letter or digit."""
    if not _NAME.fullmatch(name):  # fullmatch: "$" would accept a trailing newline
        raise BigModelError(
            f"bad model name {name!r}: use letters, digits, '_', '.', '-' (starting with a letter or digit)"
        )
    return name


def check_alias(alias: str) -> str:
    if not _ALIAS.fullmatch(alias):
        raise BigModelError(
            f"bad alias {alias!r}: use letters, digits, '_', '-' (starting with a letter), e.g. production"
        )
    return alias


def parse_version(text: str) -> int | None:
    """``"3"`` -> 3; None for anything but a version number in ASCII digits (``"²"``, ``"-1"``, ``"0"``).

    ``str.isdigit`` alone is not enough: it accepts digits such as ``²`` that ``int`` refuses.
    """
    # at most 10 digits: MAX_VERSION has 10, and int() refuses strings past 4,300 digits
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    version = int(text)
    return version if 1 <= version <= MAX_VERSION else None


def parse_ref(text: str) -> Ref:
    """``iris`` -> Ref("iris"); ``iris:3`` -> version 3; ``iris@staging`` -> alias staging."""
    if "@" in text:
        name, alias = text.split("@", 1)
        return Ref(check_name(name), alias=check_alias(alias))
    if ":" in text:
        name, version = text.split(":", 1)
        number = parse_version(version)
        if number is None:
            raise BigModelError(
                f"bad model reference {text!r}: the version after ':' must be an integer "
                f"from 1 to {MAX_VERSION}"
            )
        return Ref(check_name(name), version=number)
    return Ref(check_name(text))
