"""Drivers of ABI v2 models: lay out what the declaration names, write the context, and run
the entry points over K threads (`Executor`: the WASM pool, or the native baseline).

- a scenario generator (exports `lc_prepare_scenarios`, no `lc_run_blocks`): fills its
  scenario buffers f64 [N][months], split over scenario ranges;
- a projection (exports `lc_run_blocks`): policy columns, tables, parameters and scenario
  buffers in; `lc_prepare` once, `lc_prepare_scenarios` over scenario ranges, then block
  partials f64 [blocks][outputs][N], ``blocks_per_call`` blocks per call pulled by the threads.

Entry points other than `lc_run_blocks` are optional; a model that lacks one is not called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from services.engine.abi import (
    TYPE_FLOAT64,
    ArrayDescriptor,
    Context,
    pack_arrays,
    pack_params,
)
from services.engine.errors import PipelineError
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
) -> dict[str, ScenarioBuffer]:
    """Fill one f64 [N][months] buffer per name in ``outputs`` with the generator ``model``."""
    n = params.count
    buffers = {out: ScenarioBuffer(scenario_buffer(alloc, f"{name}.{out}", n, months), n, months) for out in outputs}
    r = generator_regions(alloc, name, n_buffers=len(outputs), n_params=len(GENERATOR_PARAMS))
    ex.memory.ensure(alloc.end)
    mem = ex.memory
    mem.write(r["scenario_inputs"].offset, pack_arrays([
        ArrayDescriptor(b.region.offset, TYPE_FLOAT64, (n, months)) for b in buffers.values()
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
    ex.map(model, "lc_prepare_scenarios", c, scenario_ranges(n, ex.threads), control)
    return buffers


@dataclass(frozen=True)
class ProjectionResult:
    """Block partials f64 [blocks][outputs][N] (a copy: it stays right after the run's lease
    ends and the memory is zeroed for the next run) and where they were in memory."""

    partials: F64
    partials_region: Region


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
) -> ProjectionResult:
    """Value ``records`` under the scenario buffers named by the declaration's scenario inputs."""
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
    shape = ProjectionShape(
        rows=n_rows,
        n_scen=n_scen,
        n_outputs=n_out,
        columns=tuple((c.name, c.dtype) for c in interface.columns),
        tables=tuple((t.name, tuple(int(d) for d in t.values.shape)) for t in assets.tables),
        n_params=len(interface.parameters),
        n_scenario_inputs=len(inputs),
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
    )  # fmt: skip
    c = r["ctx"].offset
    mem.write(c, ctx.pack())
    if ex.has_export(model, "lc_workspace_size"):
        size = ex.call_value(model, "lc_workspace_size", (c,), control)
        if size < 0:
            raise PipelineError(f"{name}: lc_workspace_size returned status {-size}")
        if size:
            workspace = alloc.add(f"{name}.workspace", size)
            mem.ensure(alloc.end)
            ctx = Context(**{**ctx.__dict__, "workspace": workspace.offset, "workspace_bytes": size})
            mem.write(c, ctx.pack())
    if ex.has_export(model, "lc_prepare"):
        ex.call(model, "lc_prepare", (c,), control)
    if ex.has_export(model, "lc_prepare_scenarios"):
        ex.map(model, "lc_prepare_scenarios", c, scenario_ranges(n_scen, ex.threads), control)
    ex.map(model, "lc_run_blocks", c, _ranges(blocks, blocks_per_call), control)
    partials = np.array(mem.view(r["partials"], np.float64, (blocks, n_out, n_scen)))
    return ProjectionResult(partials=partials, partials_region=r["partials"])
