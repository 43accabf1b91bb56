"""What SubmitJob refuses before a job is recorded: a dataset that breaks the model's rules, and
work no engine can hold.

A job that cannot finish must not be accepted: it would hold an admission slot, spend engine
time on the blocks before the bad row, and end FAILED long after the caller stopped watching.
Two checks run at submit, each answering INVALID_ARGUMENT with field violations:

- **The dataset against the package's declared rules** (ValidateDataset on the data service,
  sent the package's declaration and the table bounds its rules read: types, ranges, the
  declared cross-column rules such as a premium for in-force policies, duplicate keys across
  the whole dataset — engines only see their own chunk, so a duplicate in two chunks would be
  valued twice). A verdict holds for one version of a dataset under one declaration, so
  verdicts are kept by (tenant, dataset, version, declaration digest): each version is read
  once per declaration, however many jobs run on it.
- **The scenarios against the engines' memory**: each engine advertises the most scenarios
  its smallest chunk (one block, one thread) can hold within its memory limit
  (GetCapabilities.max_scenarios and memory_limit_bytes); a count above every engine's can
  never run. With no engine known yet the check is left to the engines, whose refusal (marked
  too-large) fails the job.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from services.common.errors import FieldViolation, InvalidArgument
from services.gateway.engines import Engine
from services.gateway.inputs import Datasets, Declaration, Validation

#: Verdicts kept (one per dataset version and declaration); the oldest goes first.
VERDICTS_KEPT: Final = 256
#: Violations a refusal names: the first of each rule broken in each column, at most this many.
SHOWN: Final = 5
GIB: Final = float(1 << 30)


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


class DatasetRules:
    """ValidateDataset verdicts by dataset version and declaration (see the module docstring)."""

    def __init__(self, datasets: Datasets, kept: int = VERDICTS_KEPT) -> None:
        self.datasets = datasets
        self.kept = kept
        self._verdicts: OrderedDict[tuple[str, str, str, str], Validation] = OrderedDict()

    async def check(self, dataset_id: str, version: str, declaration: Declaration | str, tenant: str = "") -> None:
        """INVALID_ARGUMENT when ``version`` of the dataset breaks the declared rules (a bare model
        name: the data service's declaration of that model)."""
        if isinstance(declaration, str):
            declaration = Declaration(declaration)
        key = (tenant, dataset_id, version, declaration.digest)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = await self.datasets.validate(dataset_id, declaration, tenant)
            # the dataset may have changed since GetDataset: keep the verdict of what was read
            self._verdicts[(tenant, dataset_id, verdict.version, declaration.digest)] = verdict
            while len(self._verdicts) > self.kept:
                self._verdicts.popitem(last=False)
        else:
            self._verdicts.move_to_end(key)
        if not verdict.valid:
            raise refusal(verdict, declaration.model)


def refusal(verdict: Validation, model: str) -> InvalidArgument:
    """The error that names what is wrong with the dataset, row by row."""
    fields: list[FieldViolation] = [
        FieldViolation(f"dataset.columns.{name}", f"is required by the model {model!r} and missing")
        for name in verdict.missing_columns
    ]
    # one example of each rule broken in each column (the first in row order), not ten of the commonest
    examples = {(v.rule, v.column): v for v in reversed(verdict.violations)}
    for v in sorted(examples.values(), key=lambda v: v.row)[:SHOWN]:
        where = f"dataset.rows[{v.row}]" + (f".{v.column}" if v.column else "")
        fields.append(FieldViolation(where, v.message))
    counts = ", ".join(f"{rule} {count:,}" for rule, count in verdict.rule_counts)
    what = f"{verdict.violation_count:,} rule violations" + (f" ({counts})" if counts else "")
    if verdict.missing_columns:
        what = f"missing columns {', '.join(verdict.missing_columns)}; {what}"
    return InvalidArgument(
        f"dataset {verdict.dataset_id} (version {verdict.version}) does not meet the model {model!r}: {what}; "
        f"`livecalc datasets validate {verdict.dataset_id}` lists them",
        tuple(fields),
    )


def check_capacity(scenarios: int, engines: list[Engine]) -> None:
    """INVALID_ARGUMENT when ``scenarios`` is more than any engine advertises it can take."""
    said = [e for e in engines if e.max_scenarios > 0]
    if not said:
        return  # no engine has said yet; an engine's refusal (marked too-large) fails the job
    largest = max(said, key=lambda e: e.max_scenarios)
    if scenarios > largest.max_scenarios:
        raise InvalidArgument(
            "invalid job spec",
            (
                FieldViolation(
                    "spec.scenarios.count",
                    f"{scenarios:,} scenarios cannot run on any engine: the largest takes at most "
                    f"{largest.max_scenarios:,} in a chunk within its {_gib(largest.memory_limit_bytes)} of memory "
                    "(GetCapabilities.max_scenarios, memory_limit_bytes): run fewer scenarios per job, "
                    "or engines with more memory",
                ),
            ),
        )
