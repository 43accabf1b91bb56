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

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from services.valuation.arrays import F64
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.errors import ModelInputError, Violation
from services.valuation.interface.records import Records

NON_FINITE_RULE = "non_finite_result"
"""The rule name of a non-finite output (in `Violation.rule`)."""

RunPartials = Callable[[Records], F64]
"""Runs the chunk's pipeline on some policies; returns their block partials f64 [blocks][K][N]."""


def is_finite(partials: F64) -> bool:
    """True when every value of the partials is finite (the normal path's only cost)."""
    return bool(np.isfinite(partials).all())


def locate(
    policies: Records,
    partials: F64,
    run: RunPartials,
    row_of: Callable[[int], int],
    output_names: tuple[str, ...],
) -> ModelInputError:
    """The error naming the first policy (dataset row via ``row_of``) whose outputs are not finite.

    ``partials`` are the run's results over ``policies`` (blocks of BLOCK_SIZE rows in order),
    f64 [blocks][K][N] with the K outputs ``output_names`` (the package's declared order).
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
            shown = _describe(*_first_non_finite(partials[block], output_names))
            message = f"rows {first}..{last} give {shown} together, each row alone a finite one"
            return ModelInputError("policies", [Violation("*", message, first, NON_FINITE_RULE)])
    r = int(rows[0])
    one = policies.take([r])
    output, scenario, bad = _first_non_finite(run(one)[0], output_names)
    where = _describe(output, scenario, bad)
    column = _culprit(one, run)
    if column is None:
        message = f"the policy gives {where} with this package's assumptions and these scenarios"
        return ModelInputError("policies", [Violation(output, message, row_of(r), NON_FINITE_RULE)])
    value = float(one.columns[column][0])
    message = f"is {value:g}, which gives {where} (the policy is finite with {column} 1)"
    return ModelInputError("policies", [Violation(column, message, row_of(r), NON_FINITE_RULE)])


def _first_non_finite(values: F64, output_names: tuple[str, ...]) -> tuple[str, int, float]:
    """(output name, scenario, value) of the first non-finite value of f64 [K][N]."""
    output, scenario = (int(i[0]) for i in np.nonzero(~np.isfinite(values)))
    name = output_names[output] if output < len(output_names) else f"#{output}"
    return name, scenario, float(values[output, scenario])


def _describe(output: str, scenario: int, value: float) -> str:
    return f"the output {output} of scenario {scenario} = {value}"


def _culprit(one: Records, run: RunPartials) -> str | None:
    """The float64 column above 1 that, set to 1, makes the policy's outputs finite (None if none
    does): amounts scale cash flows, so an amount is what overflows."""
    for name, values in one.columns.items():
        if values.dtype != np.float64 or not float(values[0]) > 1:  # 1 or less cannot be what overflows
            continue
        columns: dict[str, Any] = {**one.columns, name: np.ones(1)}
        if is_finite(run(Records(columns, one.horizons))):
            return name
    return None
