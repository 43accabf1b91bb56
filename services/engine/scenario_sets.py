"""Scenario sets: a job's scenario inputs read from a dataset instead of made by a generator.

A *scenario set* (docs/model-interface.md "Scenario inputs") is a dataset with columns
``scenario`` (0..S−1), ``month`` (0..M−1) and one float column per scenario input the model
declares, named as the input; rows are ordered by scenario then month, every scenario with the
same months 0..M−1 (S·M rows). The gateway checks the columns and the shape at submit and tells
engines the version and M (`ScenarioSpec.dataset_version`, ``months``).

An engine reads rows [0, N·M) of the version the job was accepted on (its first N scenarios),
in pieces of `PIECE_ROWS` rows and only the columns it needs, checks that every row is the
scenario and month its position says and that every value is finite, and builds one f64 [N][M]
array per declared scenario input: the pipeline's `RunInputs.scenario_data`, which replaces the
generator node that would make them. Loaded sets are cached per (tenant, dataset, version, N,
M, inputs) in a small LRU bounded by bytes (`ScenarioSetCache`), so the chunks of one job read
the set once per engine; chunks that ask for the same set at once share one read.

A broken set fails the same way on every engine and every retry: `ScenarioSetError` is
INVALID_ARGUMENT marked ``livecalc-fault: model``, so the gateway fails the job at once.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from services.common.errors import FAULT_MODEL, InvalidArgument
from services.engine.byte_lru import ByteLru
from services.engine.errors import EngineError
from services.valuation.arrays import F64
from services.valuation.interface.records import Records

SCENARIO: Final = "scenario"
MONTH: Final = "month"
#: Rows read per ReadRows call: a piece of a few MiB, whatever the set's size.
PIECE_ROWS: Final = 1 << 17
#: Bytes of loaded sets an engine keeps (a set larger than this is read for each chunk).
DEFAULT_CACHE_BYTES: Final = 256 << 20


class ScenarioSetError(EngineError, InvalidArgument):
    """The scenario set is not what the job needs: any engine would say the same."""

    fault = FAULT_MODEL


class SetRows(Protocol):
    """Reads a set's rows (`services.engine.row_reader.TenantRows`, or a fake in tests)."""

    async def read(
        self, dataset_id: str, version: str, start_row: int, end_row: int, *, columns: Sequence[str] = ()
    ) -> pa.Table: ...


@dataclass(frozen=True)
class ScenarioSet:
    """A loaded set: f64 [N][M] per declared scenario input."""

    dataset_id: str
    version: str
    months: int
    arrays: Mapping[str, F64]

    @property
    def count(self) -> int:
        return next(iter(self.arrays.values())).shape[0] if self.arrays else 0

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays.values())

    def check_covers(self, records: Records, row_of: Callable[[int], int]) -> None:
        """`ScenarioSetError` when a row is projected for more months than the set has."""
        if len(records) == 0 or records.horizon_months <= self.months:
            return
        worst = int(np.argmax(records.horizons))
        raise ScenarioSetError(
            f"scenario set {self.dataset_id} has {self.months} months; the policies need "
            f"{int(records.horizons[worst])} (policy row {row_of(worst)})"
        )


@dataclass(frozen=True)
class SetRequest:
    """Which set a chunk reads: its first ``count`` scenarios of ``months`` months each."""

    dataset_id: str
    version: str
    count: int
    months: int
    inputs: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.version:
            raise InvalidArgument(f"scenario set {self.dataset_id}: the request names no dataset_version")
        if self.count < 1 or self.months < 1:
            raise InvalidArgument(
                f"scenario set {self.dataset_id}: scenarios.count and scenarios.months must be ≥ 1 "
                f"(got {self.count} and {self.months})"
            )
        if not self.inputs:
            raise ScenarioSetError(
                f"scenario set {self.dataset_id}: the package's model declares no scenario inputs to read from it"
            )

    @property
    def nbytes(self) -> int:
        return 8 * self.count * self.months * len(self.inputs)


def _describe(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "infinite" if value > 0 else "-infinite"


def _integers(table: pa.Table, name: str, label: str, first_row: int) -> npt.NDArray[np.int64]:
    column = table.column(name)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise ScenarioSetError(f"{label}: column {name} is {column.type}; it must hold whole numbers")
    if column.null_count:
        row = int(pc.index(pc.is_null(column), True).as_py())
        raise ScenarioSetError(f"{label}: row {first_row + row}: {name} is missing")
    values = column.to_numpy(zero_copy_only=False)
    if values.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
        if bad.size:
            row = int(bad[0])
            value = float(values[row])
            raise ScenarioSetError(f"{label}: row {first_row + row}: {name} is {value!r}, not a whole number")
    return np.asarray(values, dtype=np.int64)


def fill_piece(request: SetRequest, table: pa.Table, first_row: int, out: Mapping[str, F64]) -> None:
    """Check rows [first_row, first_row + len(table)) of the set and copy their values into ``out``
    (f64 [N][M] per input; the rows' flat positions)."""
    label = f"scenario set {request.dataset_id}"
    missing = [c for c in (SCENARIO, MONTH, *request.inputs) if c not in table.column_names]
    if missing:
        raise ScenarioSetError(f"{label} (version {request.version}) has no column {', '.join(missing)}")
    n = table.num_rows
    rows = np.arange(first_row, first_row + n, dtype=np.int64)
    scenario = _integers(table, SCENARIO, label, first_row)
    month = _integers(table, MONTH, label, first_row)
    want_s, want_m = rows // request.months, rows % request.months
    wrong = np.flatnonzero((scenario != want_s) | (month != want_m))
    if wrong.size:
        i = int(wrong[0])
        raise ScenarioSetError(
            f"{label}: row {first_row + i} (scenario {scenario[i]}, month {month[i]}) should be scenario "
            f"{want_s[i]}, month {want_m[i]}: rows go by scenario then month, every scenario with months "
            f"0..{request.months - 1}"
        )
    for name in request.inputs:
        column = table.column(name)
        if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
            raise ScenarioSetError(f"{label}: column {name} is {column.type}; it must hold numbers")
        if column.null_count:
            i = int(pc.index(pc.is_null(column), True).as_py())
            raise ScenarioSetError(f"{label}: row {first_row + i} (scenario {scenario[i]}, month {month[i]}): "
                                   f"{name} is missing")  # fmt: skip
        values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            raise ScenarioSetError(
                f"{label}: row {first_row + i} (scenario {scenario[i]}, month {month[i]}): "
                f"{name} is {_describe(float(values[i]))}"
            )
        out[name].reshape(-1)[first_row : first_row + n] = values


async def load_set(rows: SetRows, request: SetRequest, *, piece_rows: int = PIECE_ROWS) -> ScenarioSet:
    """Read, check and lay out the set's first ``request.count`` scenarios (see the module docstring)."""
    total = request.count * request.months
    out = {name: np.empty((request.count, request.months), dtype=np.float64) for name in request.inputs}
    columns = (SCENARIO, MONTH, *request.inputs)
    step = max(1, piece_rows)
    for start in range(0, total, step):
        end = min(total, start + step)
        table = await rows.read(request.dataset_id, request.version, start, end, columns=columns)
        if table.num_rows != end - start:
            raise ScenarioSetError(
                f"scenario set {request.dataset_id}: rows [{start}, {end}) came back as {table.num_rows} rows"
            )
        await asyncio.to_thread(fill_piece, request, table, start, out)
    for array in out.values():
        array.flags.writeable = False  # shared by every chunk that uses the cached set
    return ScenarioSet(request.dataset_id, request.version, request.months, out)


@dataclass
class ScenarioSetCache:
    """Loaded sets by (tenant, request), least recently used dropped first beyond ``max_bytes``."""

    max_bytes: int = DEFAULT_CACHE_BYTES
    piece_rows: int = PIECE_ROWS
    _sets: ByteLru[tuple[str, SetRequest], ScenarioSet] = field(init=False)
    _loading: dict[tuple[str, SetRequest], asyncio.Task[ScenarioSet]] = field(default_factory=dict)
    loads: int = 0
    """Sets read from the data service (a cache miss each)."""

    def __post_init__(self) -> None:
        self._sets = ByteLru(self.max_bytes, lambda s: s.nbytes)

    @property
    def size_bytes(self) -> int:
        return self._sets.size_bytes

    async def get(self, rows: SetRows, tenant: str, request: SetRequest) -> ScenarioSet:
        """The set, from the cache or read once for every chunk that asks for it meanwhile (the
        read goes on when a chunk waiting for it is cancelled: the others, or the next, use it)."""
        key = (tenant, request)
        found = self._sets.get(key)
        if found is not None:
            return found
        task = self._loading.get(key)
        if task is None:
            self.loads += 1
            task = asyncio.ensure_future(load_set(rows, request, piece_rows=self.piece_rows))
            self._loading[key] = task
            task.add_done_callback(lambda done: self._loaded(key, done))
        return await asyncio.shield(task)

    def _loaded(self, key: tuple[str, SetRequest], task: asyncio.Task[ScenarioSet]) -> None:
        self._loading.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return  # the exception is retrieved here; waiters re-raise it
        self._sets.put(key, task.result())
