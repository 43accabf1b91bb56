"""What validation found: every error and warning at once, each with where it is.

``where`` is a JSON path into the config (``$.pipeline[1].engine``), a file inside the package
(``wasm/esg.wasm``), or ``archive`` for the zip itself. Errors refuse the package
(`PackageInvalid`, INVALID_ARGUMENT with one field violation per error); warnings are reported
by ``package validate`` and ``package inspect`` and stored with nothing refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from services.common.errors import FieldViolation, InvalidArgument

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Issue:
    """One finding: where it is, what is wrong, and whether it refuses the package."""

    where: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"


def error(where: str, message: str) -> Issue:
    return Issue(where, message, "error")


def warning(where: str, message: str) -> Issue:
    return Issue(where, message, "warning")


class PackageInvalid(InvalidArgument):
    """The package breaks the format; ``issues`` holds every error (and the warnings seen)."""

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues = tuple(issues)
        errors = [i for i in self.issues if i.severity == "error"]
        n = len(errors)
        super().__init__(
            f"invalid model package: {n} error{'s' if n != 1 else ''}",
            tuple(FieldViolation(i.where, i.message) for i in errors),
        )


def raise_on_errors(issues: Iterable[Issue]) -> list[Issue]:
    """Raise `PackageInvalid` when any issue is an error; otherwise return the warnings."""
    found = list(issues)
    if any(i.severity == "error" for i in found):
        raise PackageInvalid(found)
    return found
