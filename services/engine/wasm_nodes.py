"""Drivers of ABI v2 models: lay out what the declaration names, write the context, and run
the entry points over K threads (`Executor`: the WASM pool, or the native baseline).

- a scenario generator (exports `lc_prepare_scenarios`, no `lc_run_blocks`): fills its
  scenario buffers f64 [N][months], split over scenario ranges (or only the rows of a window
  [first, N) that a detail runs: its scenario s depends on s alone);
- a projection (exports `lc_run_blocks`): policy columns, tables, parameters and scenario
  buffers in; `lc_prepare` once, `lc_prepare_scenarios` over scenario ranges, then block
  partials f64 [blocks][outputs][N], ``blocks_per_call`` blocks per call pulled by the threads;
  and, when a run asks (`RunDetail`), every row's values f64 [rows][outputs][N] and each block's
  cash flows by month f64 [blocks][monthly][N][months + 1], written by the same calls when the
  model's `lc_features` says it writes them. Row values of a model that does not are valued one
  row at a time, each row a run's only block (its partial is the row's value); cash flows it
  cannot give are refused (`DetailUnavailable`).

Entry points other than `lc_run_blocks` are optional; a model that lacks one is not called.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from services.engine.abi import (
    ARRAY_SIZE,
    CTX_SIZE,
    FEATURE_CASH_FLOWS,
    FEATURE_ROW_VALUES,
    TYPE_FLOAT64,
    ArrayDescriptor,
    Context,
    pack_arrays,
    pack_params,
)
from services.engine.errors import DetailUnavailable, PipelineError
from services.engine.layout import (
    LayoutBuilder,
    ProjectionShape,
    Region,
    generator_regions,
    projection_regions,
    scenario_buffer,
)
from services.engine.workers import Executor, RunControl
from services.valuation.arrays import F64
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.interface.declaration import ModelInterface
from services.valuation.interface.records import Records
from services.valuation.interface.tables import Assets
from services.valuation.scenarios import ScenarioParams

log = logging.getLogger(__name__)

GENERATOR_PARAMS: Final = (("seed", "uint64"), ("a", "float64"), ("sigma", "float64"), ("include_base", "int64"))
"""A generator's parameter slots: the job's scenario settings (docs/model-interface.md)."""


def _ranges(total: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(a + step, total)) for a in range(0, total, max(1, step))]


def scenario_ranges(n_scen: int, threads: int) -> list[tuple[int, int]]:
    """Scenario ranges for K threads: about four per thread, multiples of 16 (a kernel's lanes)."""
    step = -(-n_scen // (4 * threads))
    return _ranges(n_scen, max(16, -(-step // 16) * 16))


@dataclass(frozen=True)
class ScenarioBuffer:
    """A scenario input in memory: f64 [n_scen][stride]."""

    region: Region
    n_scen: int
    stride: int


def run_generator(
    ex: Executor,
    model: str,
    alloc: LayoutBuilder,
    params: ScenarioParams,
    months: int,
    *,
    control: RunControl,
    outputs: Sequence[str] = ("rates",),
    name: str = "generator",
    first_scenario: int = 0,
) -> dict[str, ScenarioBuffer]:
    """Fill one f64 [N][months] buffer per name in ``outputs`` with the generator ``model``.

    With ``first_scenario`` > 0 the generator makes only scenarios [first_scenario, N) (its
    buffers are sized for all N, as its context says) and the buffers returned are the window's,
    f64 [N − first_scenario][stride] from row first_scenario; the stride is then even, so that
    row starts 16-byte aligned as every array a model is given."""
    n = params.count
    stride = months + months % 2 if first_scenario else months
    whole = {out: scenario_buffer(alloc, f"{name}.{out}", n, stride) for out in outputs}
    r = generator_regions(alloc, name, n_buffers=len(outputs), n_params=len(GENERATOR_PARAMS))
    ex.memory.ensure(alloc.end)
    mem = ex.memory
    mem.write(r["scenario_inputs"].offset, pack_arrays([
        ArrayDescriptor(region.offset, TYPE_FLOAT64, (n, stride)) for region in whole.values()
    ]))  # fmt: skip
    values = (params.seed, params.a, params.sigma, int(params.include_base))
    mem.write(r["params"].offset, pack_params(values, [t for _, t in GENERATOR_PARAMS]))
    ctx = Context(
        n_rows=0, n_scen=n, n_months=months, block_size=BLOCK_SIZE,
        n_params=len(GENERATOR_PARAMS), params=r["params"].offset,
        n_scenario_inputs=len(outputs), scenario_inputs=r["scenario_inputs"].offset,
    )  # fmt: skip
    c = r["ctx"].offset
    mem.write(c, ctx.pack())
    if ex.has_export(model, "lc_prepare"):
        ex.call(model, "lc_prepare", (c,), control)
    window = [(first_scenario + a, first_scenario + b) for a, b in scenario_ranges(n - first_scenario, ex.threads)]
    ex.map(model, "lc_prepare_scenarios", c, window, control)
    return {out: window_buffer(region, first_scenario, n - first_scenario, stride) for out, region in whole.items()}


def window_buffer(region: Region, first_scenario: int, n_scen: int, stride: int) -> ScenarioBuffer:
    """Rows [first_scenario, first_scenario + n_scen) of the scenario buffer f64 [·][stride] at ``region``."""
    skip = first_scenario * stride * 8
    return ScenarioBuffer(Region(region.name, region.offset + skip, region.size - skip), n_scen, stride)


@dataclass(frozen=True)
class RunDetail:
    """What a run returns besides its block partials (docs/model-interface.md "Row values and
    cash flows")."""

    row_values: bool = False
    """Every row's value of every output under every scenario, f64 [rows][outputs][N]."""
    cash_flows: bool = False
    """Each block's cash flows by month of the outputs declared monthly, f64 [blocks][monthly][N][T + 1]."""


class OnceLog:
    """Logs a message once per key (a model that makes every detail run take the slow path)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def warning(self, key: str, message: str, *args: object) -> None:
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
        log.warning(message, *args)


ROW_BY_ROW_LOG: Final = OnceLog()
"""Models already reported as valuing row values one row at a time, once per model name for the
process: the engine makes a pipeline runner per chunk, so a runner's own log would repeat."""


@dataclass(frozen=True)
class ProjectionResult:
    """Block partials f64 [blocks][outputs][N] (a copy: it stays right after the run's lease
    ends and the memory is zeroed for the next run) and where they were in memory; row values
    and block cash flows when the run asked for them."""

    partials: F64
    partials_region: Region
    row_values: F64 | None = None
    """f64 [rows][outputs][N]: row i's value of output k under scenario s."""
    cash_flows: F64 | None = None
    """f64 [blocks][monthly][N][months + 1]: block b's cash flow of monthly output m at month t."""


def model_features(ex: Executor, model: str, control: RunControl) -> int:
    """The model's `lc_features` bits (0 for a model without the export)."""
    return ex.call_value(model, "lc_features", (), control) if ex.has_export(model, "lc_features") else 0


def check_detail(model: str, interface: ModelInterface, features: int, detail: RunDetail) -> None:
    """Refuse cash flows a model cannot give (row values it can always give, if slowly)."""
    if not detail.cash_flows:
        return
    if not interface.output_list.monthly:
        raise DetailUnavailable(f"model {model!r} declares no monthly outputs, so it has no cash flows by month")
    if not features & FEATURE_CASH_FLOWS:
        raise DetailUnavailable(
            f"model {model!r} was built without monthly cash flows (its lc_features does not say it writes them); "
            "rebuild it with `livecalc package build`"
        )


def run_projection(
    ex: Executor,
    model: str,
    alloc: LayoutBuilder,
    interface: ModelInterface,
    *,
    records: Records,
    assets: Assets,
    scenarios: Mapping[str, ScenarioBuffer],
    n_scen: int,
    control: RunControl,
    blocks_per_call: int = 1,
    first_row: int = 0,
    name: str = "projection",
    detail: RunDetail | None = None,
) -> ProjectionResult:
    """Value ``records`` under the scenario buffers named by the declaration's scenario inputs
    (and return the ``detail`` asked for: `RunDetail`)."""
    detail = detail or RunDetail()
    features = model_features(ex, model, control) if detail.row_values or detail.cash_flows else 0
    check_detail(model, interface, features, detail)
    written_rows = detail.row_values and bool(features & FEATURE_ROW_VALUES)
    months = records.horizon_months
    missing = [s.name for s in interface.scenario_inputs if s.name not in scenarios]
    if missing:
        raise PipelineError(f"{name}: no buffer for the scenario inputs {', '.join(missing)}")
    inputs = [scenarios[s.name] for s in interface.scenario_inputs]
    for s, buf in zip(interface.scenario_inputs, inputs, strict=True):
        if buf.n_scen != n_scen or buf.stride < months:
            raise PipelineError(
                f"{name}: scenario input {s.name!r} is [{buf.n_scen}][{buf.stride}]; "
                f"the run needs [{n_scen}][≥{months}]"
            )
    n_rows = records.n_rows
    blocks = -(-n_rows // BLOCK_SIZE)
    n_out = len(interface.outputs)
    n_monthly = len(interface.output_list.monthly) if detail.cash_flows else 0
    shape = ProjectionShape(
        rows=n_rows,
        n_scen=n_scen,
        n_outputs=n_out,
        columns=tuple((c.name, c.dtype) for c in interface.columns),
        tables=tuple((t.name, tuple(int(d) for d in t.values.shape)) for t in assets.tables),
        n_params=len(interface.parameters),
        n_scenario_inputs=len(inputs),
        row_values=written_rows,
        n_monthly=n_monthly,
        cash_flow_months=months + 1,
    )
    r = projection_regions(alloc, name, shape)
    mem = ex.memory
    mem.ensure(alloc.end)
    columns = []
    for col in interface.columns:
        region = r[f"column.{col.name}"]
        mem.view(region, col.dtype)[:] = records.columns[col.name]
        columns.append(ArrayDescriptor(region.offset, col.abi_type, (n_rows,)))
    tables = []
    for table in assets.tables:
        region = r[f"table.{table.name}"]
        mem.view(region, np.float64)[:] = np.ascontiguousarray(table.values, dtype=np.float64).reshape(-1)
        tables.append(ArrayDescriptor(region.offset, TYPE_FLOAT64, tuple(table.values.shape), tuple(table.origin)))
    mem.write(r["columns"].offset, pack_arrays(columns))
    mem.write(r["tables"].offset, pack_arrays(tables))
    mem.write(r["scenario_inputs"].offset, pack_arrays([
        ArrayDescriptor(b.region.offset, TYPE_FLOAT64, (b.n_scen, b.stride)) for b in inputs
    ]))  # fmt: skip
    mem.write(r["params"].offset, pack_params(assets.parameters, [p.type for p in interface.parameters]))
    ctx = Context(
        n_rows=n_rows, n_scen=n_scen, n_months=months, block_size=BLOCK_SIZE,
        n_columns=len(columns), columns=r["columns"].offset, n_tables=len(tables), tables=r["tables"].offset,
        n_params=len(interface.parameters), params=r["params"].offset,
        n_scenario_inputs=len(inputs), scenario_inputs=r["scenario_inputs"].offset,
        n_outputs=n_out, partials=r["partials"].offset, first_row=first_row,
        row_values=r["row_values"].offset if written_rows else 0,
        cash_flows=r["cash_flows"].offset if n_monthly else 0, n_monthly=n_monthly,
    )  # fmt: skip
    c = r["ctx"].offset
    mem.write(c, ctx.pack())
    ctx = _prepare(ex, model, alloc=alloc, ctx=ctx, c=c, name=name, workspace=f"{name}.workspace", control=control)
    ex.map(model, "lc_run_blocks", c, _ranges(blocks, blocks_per_call), control)
    partials = np.array(mem.view(r["partials"], np.float64, (blocks, n_out, n_scen)))
    row_values = None
    if written_rows:
        row_values = np.array(mem.view(r["row_values"], np.float64, (n_rows, n_out, n_scen)))
    elif detail.row_values:
        ROW_BY_ROW_LOG.warning(
            model, "model %r does not write row values (no lc_features bit 0): valuing them one row at a time; "
            "rebuild it with `livecalc package build` for speed", model,
        )  # fmt: skip
        row_values = _row_by_row(
            ex, model, alloc, interface=interface, records=records, run=ctx, name=name, control=control
        )
    cash_flows = None
    if n_monthly:
        cash_flows = np.array(mem.view(r["cash_flows"], np.float64, (blocks, n_monthly, n_scen, months + 1)))
    return ProjectionResult(partials, r["partials"], row_values, cash_flows)


def _prepare(
    ex: Executor, model: str, *, alloc: LayoutBuilder, ctx: Context, c: int, name: str, workspace: str,
    control: RunControl,
) -> Context:  # fmt: skip
    """A projection's context at offset ``c`` made ready to run: the workspace the model asks for
    (`lc_workspace_size`, laid out after everything else and written into the context), then
    `lc_prepare` once and `lc_prepare_scenarios` over the threads. The context as written."""
    mem = ex.memory
    if ex.has_export(model, "lc_workspace_size"):
        size = ex.call_value(model, "lc_workspace_size", (c,), control)
        if size < 0:
            raise PipelineError(f"{name}: lc_workspace_size returned status {-size}")
        if size:
            region = alloc.add(workspace, size)
            mem.ensure(alloc.end)
            ctx = dataclasses.replace(ctx, workspace=region.offset, workspace_bytes=size)
            mem.write(c, ctx.pack())
    if ex.has_export(model, "lc_prepare"):
        ex.call(model, "lc_prepare", (c,), control)
    if ex.has_export(model, "lc_prepare_scenarios"):
        ex.map(model, "lc_prepare_scenarios", c, scenario_ranges(ctx.n_scen, ex.threads), control)
    return ctx


def _row_by_row(
    ex: Executor,
    model: str,
    alloc: LayoutBuilder,
    *,
    interface: ModelInterface,
    records: Records,
    run: Context,
    name: str,
    control: RunControl,
) -> F64:
    """Row values f64 [rows][outputs][N] of a model that writes only partials: each row valued
    as the only row of a run (its one block's partial is the row's value, as the row adds it to
    its block's partial). The run's tables, parameters, scenario buffers and n_months stay;
    a one-row context of its own is prepared once and its columns rewritten per row."""
    n_rows, n_out, n_scen = records.n_rows, run.n_outputs, run.n_scen
    if n_rows == 0:
        return np.zeros((0, n_out, n_scen))
    one = {
        "ctx": alloc.add(f"{name}.row.ctx", CTX_SIZE),
        "columns": alloc.add(f"{name}.row.columns", ARRAY_SIZE * len(interface.columns)),
        "partials": alloc.add_array(f"{name}.row.partials", (1, n_out, n_scen), np.float64),
        **{f"column.{col.name}": alloc.add_array(f"{name}.row.column.{col.name}", (1,), col.dtype)
           for col in interface.columns},
    }  # fmt: skip
    mem = ex.memory
    mem.ensure(alloc.end)
    mem.write(one["columns"].offset, pack_arrays([
        ArrayDescriptor(one[f"column.{col.name}"].offset, col.abi_type, (1,)) for col in interface.columns
    ]))  # fmt: skip
    ctx = dataclasses.replace(
        run, n_rows=1, columns=one["columns"].offset, partials=one["partials"].offset, workspace=0, workspace_bytes=0,
        row_values=0, cash_flows=0, n_monthly=0,
    )  # fmt: skip
    c = one["ctx"].offset
    mem.write(c, ctx.pack())
    for col in interface.columns:  # row 0 in place, so the workspace size and preparation see a valid row
        mem.view(one[f"column.{col.name}"], col.dtype)[:] = records.columns[col.name][:1]
    _prepare(ex, model, alloc=alloc, ctx=ctx, c=c, name=name, workspace=f"{name}.row.workspace", control=control)
    values = np.empty((n_rows, n_out, n_scen))
    partial = mem.view(one["partials"], np.float64, (n_out, n_scen))
    views = [(mem.view(one[f"column.{col.name}"], col.dtype), records.columns[col.name]) for col in interface.columns]
    for i in range(n_rows):
        for view, column in views:
            view[0] = column[i]
        ex.call(model, "lc_run_blocks", (c, 0, 1), control)
        values[i] = partial
    return values
