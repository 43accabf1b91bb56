"""Which policy made a block's present values non-finite: the error path of a chunk.

A block partial is a sum of its policies' present values; NaN and ±inf survive every sum, so
a non-finite partial has a non-finite policy inside it, unless finite values overflowed
together. The rules of the policy record keep dataset inputs in bounds, so this happens only
with extreme assumptions or scenarios, or a model that misbehaves: the chunk then answers
INVALID_ARGUMENT naming the dataset row (and the input column, where one is to blame) rather
than a result of inf and NaN.

Nothing here runs on the normal path: `check_finite` is one vectorized test of the partials.
Only when it fails does `locate` re-run the block's policies, halving the candidate rows
(about 2·log2(1024) = 20 small runs), then the one policy with each amount column set to 1,
to tell which input drives it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from services.engine.abi import PV_COMPONENTS
from services.valuation.arrays import F64
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.errors import ModelInputError, Violation
from services.valuation.policies import Policies

NON_FINITE_RULE = "non_finite_result"
"""The rule name of a non-finite present value (in `Violation.rule`)."""

_AMOUNTS = ("policy_count", "sum_assured", "premium_pp")
"""Input columns that scale a policy's cash flows (each tried at 1 to find the culprit)."""

RunPartials = Callable[[Policies], F64]
"""Runs the chunk's pipeline on some policies; returns their block partials f64 [blocks][5][N]."""


def is_finite(partials: F64) -> bool:
    """True when every value of the partials is finite (the normal path's only cost)."""
    return bool(np.isfinite(partials).all())


def locate(policies: Policies, partials: F64, run: RunPartials, row_of: Callable[[int], int]) -> ModelInputError:
    """The error naming the first policy (dataset row via ``row_of``) whose PVs are not finite.

    ``partials`` are the run's results over ``policies`` (blocks of BLOCK_SIZE rows in order).
    """
    blocks = np.flatnonzero(~np.isfinite(partials).reshape(partials.shape[0], -1).all(axis=1))
    block = int(blocks[0])
    rows: npt.NDArray[np.int64] = np.arange(block * BLOCK_SIZE, min((block + 1) * BLOCK_SIZE, len(policies)))
    while rows.size > 1:
        half = rows.size // 2
        if not is_finite(run(policies.take(rows[:half]))):
            rows = rows[:half]
        elif not is_finite(run(policies.take(rows[half:]))):
            rows = rows[half:]
        else:
            first, last = row_of(int(rows[0])), row_of(int(rows[-1]))
            shown = _describe(*_first_non_finite(partials[block]))
            message = f"rows {first}..{last} give {shown} together, each row alone a finite one"
            return ModelInputError("policies", [Violation("*", message, first, NON_FINITE_RULE)])
    r = int(rows[0])
    one = policies.take([r])
    component, scenario, bad = _first_non_finite(run(one)[0])
    where = _describe(component, scenario, bad)
    column = _culprit(one, run)
    if column is None:
        message = f"the policy gives {where} with this package's assumptions and these scenarios"
        return ModelInputError("policies", [Violation(f"pv_{component}", message, row_of(r), NON_FINITE_RULE)])
    value = float(getattr(one, column)[0])
    message = f"is {value:g}, which gives {where} (the policy is finite with {column} 1)"
    return ModelInputError("policies", [Violation(column, message, row_of(r), NON_FINITE_RULE)])


def _first_non_finite(values: F64) -> tuple[str, int, float]:
    """(component, scenario, value) of the first non-finite value of f64 [5][N]."""
    component, scenario = (int(i[0]) for i in np.nonzero(~np.isfinite(values)))
    return PV_COMPONENTS[component], scenario, float(values[component, scenario])


def _describe(component: str, scenario: int, value: float) -> str:
    return f"the present value {component} of scenario {scenario} = {value}"


def _culprit(one: Policies, run: RunPartials) -> str | None:
    """The amount column that, set to 1, makes the policy's PVs finite (None if none does)."""
    for name in _AMOUNTS:
        value = float(getattr(one, name)[0])
        if not value > 1:  # 1 or less (or a premium to compute) cannot be what overflows
            continue
        ones: dict[str, Any] = {name: np.ones(1)}
        if is_finite(run(dataclasses.replace(one, **ones))):
            return name
    return None
