"""The pipeline runner: a package's nodes ``{id, engine, inputs, outputs}`` run in
topological order over one shared memory.

Inputs are ``$policies``, ``$assumptions``, ``$scenarios`` or bus buffers ``bus://name``
produced by another node; outputs are bus buffers. Bus buffers live in the engine's
SharedMemory, so WASM instances on K threads read them zero-copy, and ``python://`` nodes
(the built-in numpy reference implementations, never code from a package) read and write
the same buffers through numpy views.

Node kinds (ABI v2, docs/model-interface.md), read from a ``wasm://`` binary's exports:
a scenario generator (``lc_prepare_scenarios`` without ``lc_run_blocks``; input
``$scenarios``; its outputs are scenario buffers f64 [N][T], one per ``bus://NAME``) and a
projection (``lc_run_blocks``; inputs ``$policies``, ``$assumptions`` and one bus buffer per
declared scenario input, by name; one output, block partials f64 [blocks][outputs][N]).
``python://esg``, ``python://normals``, ``python://term_life`` and ``python://savings`` are the numpy
twins of the shipped models.
Scenario buffers a run is given (a scenario dataset) replace the generator that would make them.

A run may value a *window* of the scenarios, [first_scenario, count) (`RunInputs.first_scenario`:
a detail of high scenarios): the generator makes only the window's rows, and every buffer the
projection reads and every result it writes has the window's scenarios on its scenario axis,
window scenario i being scenario first_scenario + i. A scenario is a pure function of (seed, s)
and a policy's value under it does not depend on the other scenarios of the run, so the window's
values are those of a run from scenario 0, bit for bit.

A run may also ask (`RunDetail`) for the projection's row values f64 [rows][outputs][N] (a
policy's value of each output under each scenario: summed in row order from +0.0 they are the
block partials, bit for bit) and its blocks' cash flows by month f64 [blocks][monthly][N][T + 1]
(docs/model-interface.md "Row values and cash flows"). The numpy twins give row values, not
cash flows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.engine import reference
from services.engine.errors import DetailUnavailable, InvalidModelInput, ModelLoadError, PipelineError
from services.engine.layout import LayoutBuilder, scenario_buffer
from services.engine.reference_inputs import term_life_arguments
from services.engine.reference_savings import savings_row_values
from services.engine.wasm_nodes import RunDetail, ScenarioBuffer, run_generator, run_projection
from services.engine.workers import RunControl, RunLease, WasmPool
from services.valuation.arrays import F64
from services.valuation.blocks import BLOCK_SIZE, fold
from services.valuation.errors import ModelInputError
from services.valuation.interface.declaration import ModelInterface, Outputs
from services.valuation.interface.records import Records
from services.valuation.interface.tables import Assets
from services.valuation.model_abi import ABI_VERSION
from services.valuation.packages.config import BUS, pipeline_issues, pipeline_of, topological_order
from services.valuation.packages.config import Node as PipelineNode
from services.valuation.reference_model import shipped_models
from services.valuation.scenarios import ScenarioParams
from services.valuation.statistics import result_hash

__all__ = ["PipelineResult", "PipelineRunner", "RunDetail", "RunInputs", "plan", "reference_partials"]


def plan(config: Sequence[Mapping[str, Any] | PipelineNode]) -> list[PipelineNode]:
    """Validate the nodes (the package format's rules, `pipeline_issues`) and return them in
    topological order (ties keep config order)."""
    raw = [n.as_json() if isinstance(n, PipelineNode) else dict(n) for n in config]
    errors = [i for i in pipeline_issues(raw) if i.severity == "error"]
    if errors:
        raise PipelineError("invalid pipeline: " + "; ".join(f"{i.where}: {i.message}" for i in errors))
    return topological_order(pipeline_of({"pipeline": raw}))


@dataclass(frozen=True)
class RunInputs:
    """The ``$`` inputs of a run. A chunk's records must start at a block boundary of the dataset.

    ``scenario_data``: scenario buffers given as data (name → f64 [N][≥ months], N the run's
    scenarios: those of the window when ``first_scenario`` > 0); a generator node whose outputs are
    all given is not run.
    """

    interface: ModelInterface
    records: Records
    assets: Assets
    scenarios: ScenarioParams
    scenario_data: Mapping[str, F64] = field(default_factory=dict)
    first_row: int = 0
    first_scenario: int = 0
    """The run values scenarios [first_scenario, scenarios.count) (a window; 0: all of them)."""

    @property
    def run_scenarios(self) -> int:
        """Scenarios the run values: the length of every scenario axis of its buffers and results."""
        return self.scenarios.count - self.first_scenario


@dataclass(frozen=True)
class PipelineResult:
    """Copies of every bus buffer (name → array) and the projection's block partials; its row
    values and block cash flows when the run asked for them (`RunDetail`)."""

    buffers: dict[str, F64]
    partials: F64
    """f64 [blocks][outputs][N]: the projection node's block partials, in the declaration's output order."""
    outputs: Outputs
    row_values: F64 | None = None
    """f64 [rows][outputs][N]: row i's value of output k under scenario s (rows of the run, from its first)."""
    cash_flows: F64 | None = None
    """f64 [blocks][monthly][N][T + 1]: block b's undiscounted cash flow of monthly output m at month t."""
    monthly_outputs: tuple[str, ...] = ()
    """Names of the monthly outputs, in the order of ``cash_flows``' second axis."""

    def portfolio(self, output: str | None = None) -> F64:
        """Per-scenario portfolio value of ``output`` (the primary by default): the fold of the
        block partials in block order."""
        index = self.outputs.primary if output is None else self.outputs.names.index(output)
        return fold(self.partials[:, index, :])

    @property
    def result_hash(self) -> str:
        return result_hash(self.portfolio())


class PipelineRunner:
    """Runs pipelines on a `WasmPool` (its memory holds every buffer); models by name.

    Each run holds the pool's lease from layout to the copy of its outputs, so runners on
    one pool (one per package, or per request) may run from any threads at once.
    """

    def __init__(self, pool: WasmPool, binaries: Mapping[str, bytes] | None = None) -> None:
        self.pool = pool
        self._binaries = dict(binaries if binaries is not None else shipped_models())

    def _load(self, lease: RunLease, name: str, control: RunControl) -> str:
        wasm = self._binaries.get(name)
        if wasm is None:
            raise PipelineError(f"wasm://{name}: no such model in the package")
        exports = lease.load(name, wasm).exports
        # uploads are checked statically, but a version computed at run time (or a binary handed
        # to the runner directly) is only known by asking: one call per model and run
        version = lease.call_value(name, "lc_abi_version", (), control) if "lc_abi_version" in exports else None
        if version != ABI_VERSION:
            said = "does not export lc_abi_version" if version is None else f"speaks model ABI version {version}"
            raise ModelLoadError(f"wasm://{name} {said}; this engine speaks version {ABI_VERSION}")
        if "lc_run_blocks" in exports:
            return "projection"
        if "lc_prepare_scenarios" in exports:
            return "generator"
        raise ModelLoadError(
            f"wasm://{name} exports neither lc_run_blocks (a projection) nor lc_prepare_scenarios "
            "(a scenario generator) of ABI v2"
        )

    def run(
        self,
        config: Sequence[Mapping[str, Any] | PipelineNode],
        inputs: RunInputs,
        *,
        control: RunControl | None = None,
        blocks_per_call: int = 1,
        detail: RunDetail | None = None,
    ) -> PipelineResult:
        control = control or RunControl()
        nodes = plan(config)
        with self.pool.lease(control) as lease:
            return self._run(
                lease, nodes, inputs, control, blocks_per_call=blocks_per_call, detail=detail or RunDetail()
            )

    def _run(
        self,
        lease: RunLease,
        nodes: list[PipelineNode],
        inputs: RunInputs,
        control: RunControl,
        *,
        blocks_per_call: int,
        detail: RunDetail,
    ) -> PipelineResult:
        months = max(1, inputs.records.horizon_months)
        first, n_scen = inputs.first_scenario, inputs.run_scenarios
        if not 0 <= first < inputs.scenarios.count:
            raise PipelineError(f"first scenario {first} is outside the run's {inputs.scenarios.count} scenarios")
        mem = lease.memory
        alloc = LayoutBuilder(mem.run_base)
        bus: dict[str, ScenarioBuffer] = {}
        for name, data in inputs.scenario_data.items():
            if data.ndim != 2 or data.shape[0] != n_scen or data.shape[1] < months:
                raise PipelineError(f"scenario data {name!r} is {data.shape}; the run needs [{n_scen}][≥{months}]")
            region = scenario_buffer(alloc, f"data.{name}", n_scen, data.shape[1])
            mem.ensure(alloc.end)
            mem.view(region, np.float64, data.shape)[:] = data
            bus[name] = ScenarioBuffer(region, n_scen, int(data.shape[1]))
        partials: tuple[F64, str] | None = None
        row_values: F64 | None = None
        cash_flows: F64 | None = None
        for node in nodes:
            outputs = [o.removeprefix(BUS) for o in node.outputs]
            kind = self._load(lease, node.model, control) if node.scheme == "wasm" else node.model
            if kind in ("generator", "esg", "normals"):
                if outputs and all(o in inputs.scenario_data for o in outputs):
                    continue  # given as data
                self._need(node, ("$scenarios",), 0)
                control.check(f"node {node.id!r}")
                if node.scheme == "wasm":
                    bus.update(run_generator(lease, node.model, alloc, inputs.scenarios, months, control=control,
                                             outputs=outputs, name=node.id, first_scenario=first))  # fmt: skip
                else:
                    window = range(first, inputs.scenarios.count)
                    for out in outputs:
                        region = scenario_buffer(alloc, f"{node.id}.{out}", n_scen, months)
                        mem.ensure(alloc.end)
                        twin = reference.esg if kind == "esg" else reference.standard_normals
                        mem.view(region, np.float64, (n_scen, months))[:] = twin(inputs.scenarios, months, window)
                        bus[out] = ScenarioBuffer(region, n_scen, months)
            elif kind in ("projection", "term_life", "savings"):
                self._need(node, ("$policies", "$assumptions"), len(inputs.interface.scenario_inputs))
                given = {b.removeprefix(BUS) for b in node.inputs if b.startswith(BUS)}
                declared = {s.name for s in inputs.interface.scenario_inputs}
                if given != declared:
                    raise PipelineError(
                        f"node {node.id!r} reads {sorted(given)}; the model declares scenario inputs {sorted(declared)}"
                    )
                unmade = sorted(declared - bus.keys())
                if unmade:
                    raise PipelineError(f"node {node.id!r}: no node makes {', '.join(unmade)}")
                if node.scheme == "wasm":
                    result = run_projection(
                        lease, node.model, alloc, inputs.interface, records=inputs.records, assets=inputs.assets,
                        scenarios=bus, n_scen=n_scen, control=control, blocks_per_call=blocks_per_call,
                        first_row=inputs.first_row, name=node.id, detail=detail,
                    )  # fmt: skip
                    values, row_values, cash_flows = result.partials, result.row_values, result.cash_flows
                else:
                    if detail.cash_flows:
                        raise DetailUnavailable(f"{node.engine}: the numpy twins give no cash flows by month")
                    control.check(f"node {node.id!r}")
                    given_buffer = bus[inputs.interface.scenario_inputs[0].name]
                    scenario = np.array(mem.view(given_buffer.region, np.float64, (n_scen, given_buffer.stride)))
                    project = savings_row_values if kind == "savings" else reference_row_values
                    rows = project(inputs, scenario)
                    values = reference.row_value_partials(rows)
                    row_values = rows if detail.row_values else None
                partials = (values, outputs[0] if outputs else node.id)
            else:
                raise PipelineError(f"node {node.id!r}: unknown built-in engine {node.engine!r}")
        if partials is None:
            raise PipelineError("pipeline has no projection node")
        buffers = {name: np.array(mem.view(b.region, np.float64, (b.n_scen, b.stride))) for name, b in bus.items()}
        buffers[partials[1]] = partials[0]
        outputs_declared = inputs.interface.output_list
        return PipelineResult(
            buffers=buffers,
            partials=partials[0],
            outputs=outputs_declared,
            row_values=row_values,
            cash_flows=cash_flows,
            monthly_outputs=outputs_declared.monthly_names if cash_flows is not None else (),
        )

    @staticmethod
    def _need(node: PipelineNode, specials: tuple[str, ...], n_bus: int) -> list[str]:
        missing = [s for s in specials if s not in node.inputs]
        bus_inputs = [i for i in node.inputs if i.startswith(BUS)]
        if missing or len(bus_inputs) != n_bus or (n_bus and len(node.outputs) != 1):
            raise PipelineError(
                f"node {node.id!r} ({node.engine}) needs inputs {', '.join(specials)}"
                f"{f' and {n_bus} bus buffer(s)' if n_bus else ''} and one output"
            )
        return bus_inputs


def reference_row_values(inputs: RunInputs, shocks: F64) -> F64:
    """python://term_life as row values f64 [rows][5][N]: each policy's PVs in the declaration's order."""
    policies, assumptions = term_life_arguments(inputs.records, inputs.assets, inputs.interface)
    try:
        assumptions.check_covers(policies)
    except ModelInputError as exc:
        raise InvalidModelInput(str(exc)) from exc
    pvs = reference.term_life(policies, assumptions, shocks)
    return np.stack([getattr(pvs, name) for name in inputs.interface.output_list.names], axis=1)


def reference_partials(inputs: RunInputs, shocks: F64) -> F64:
    """python://term_life as block partials f64 [blocks][5][N] (reference summation order)."""
    return reference.row_value_partials(reference_row_values(inputs, shocks), BLOCK_SIZE)
