"""Broken input rules of the valuation domain, as one error in the project's error tree.

A `ModelInputError` is a `LivecalcError` with status INVALID_ARGUMENT: the interceptor answers it
with the violations in the details, and callers can still read each `Violation` (row, column,
rule).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import grpc

from services.common.errors import LivecalcError

MAX_VIOLATIONS_IN_MESSAGE: Final = 20
"""How many violations an error message lists before it summarises the rest."""


@dataclass(frozen=True)
class Violation:
    """One broken input rule: ``row`` is the 0-based dataset row (None for a whole-input rule).

    ``rule`` names the kind of rule (``type``, ``required``, ``range``, ``enum``,
    ``premium_required``, ``duplicate_policy_id``, …) the same way ValidateDataset reports it.
    """

    column: str
    message: str
    row: int | None = None
    rule: str = ""

    def __str__(self) -> str:
        where = f"row {self.row}: " if self.row is not None else ""
        return f"{where}{self.column}: {self.message}"


class ModelInputError(LivecalcError):
    """Model inputs break the model's rules (docs/datasets.md); ``violations`` lists each broken rule."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, what: str, violations: Iterable[Violation]) -> None:
        self.what = what
        self.violations: tuple[Violation, ...] = tuple(violations)
        shown = "; ".join(str(v) for v in self.violations[:MAX_VIOLATIONS_IN_MESSAGE])
        more = len(self.violations) - MAX_VIOLATIONS_IN_MESSAGE
        suffix = f"; … and {more} more" if more > 0 else ""
        super().__init__(f"invalid {what}: {shown}{suffix}")


def raise_if(what: str, violations: list[Violation]) -> None:
    """Raise one ModelInputError listing every violation, if there are any."""
    if violations:
        raise ModelInputError(what, violations)
