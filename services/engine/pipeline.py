"""The pipeline runner: a package's nodes ``{id, engine, inputs, outputs}`` run in
topological order over one shared memory.

Inputs are ``$policies``, ``$assumptions``, ``$scenarios`` or bus buffers ``bus://name``
produced by another node; outputs are bus buffers. Bus buffers live in the engine's
SharedMemory, so WASM instances on K threads read them zero-copy, and ``python://`` nodes
(the built-in numpy reference implementations, never code from a package) read and write
the same buffers through numpy views.

Node kinds (model ABI v1, docs/model-abi.md): a scenario generator (``esg``: exports
``esg_run``; inputs ``$scenarios``; one output, rates f64 [N][T]) and a projection
(``term_life``: exports ``tl_*``; inputs ``$policies``, ``$assumptions`` and one bus
buffer of rates; one output, block partials f64 [blocks][5][N]). A ``wasm://name`` node's
kind is read from its binary's exports; ``python://esg`` and ``python://term_life`` are
the reference implementations of the same kinds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.engine import reference
from services.engine.abi import ESG_EXPORTS, N_PV, PV_COMPONENTS, TERM_LIFE_EXPORTS
from services.engine.errors import InvalidModelInput, ModelLoadError, PipelineError
from services.engine.layout import LayoutBuilder, Region, esg_rates
from services.engine.wasm_nodes import run_esg, run_term_life
from services.engine.workers import RunControl, RunLease, WasmPool
from services.valuation.arrays import F64
from services.valuation.assumptions import Assumptions
from services.valuation.blocks import BLOCK_SIZE, block_count, fold
from services.valuation.errors import ModelInputError
from services.valuation.packages.config import BUS, pipeline_issues, pipeline_of, topological_order
from services.valuation.packages.config import Node as PipelineNode
from services.valuation.policies import Policies
from services.valuation.reference_model import shipped_models
from services.valuation.scenarios import ScenarioParams
from services.valuation.statistics import result_hash


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
    """The ``$`` inputs of a run. A chunk's policies must start at a block boundary of the dataset."""

    policies: Policies
    assumptions: Assumptions
    scenarios: ScenarioParams


@dataclass(frozen=True)
class PipelineResult:
    """Copies of every bus buffer (name → array) and the projection's block partials."""

    buffers: dict[str, F64]
    partials: F64
    """f64 [blocks][5][N]: the last projection node's block partials (components PV_COMPONENTS)."""

    def portfolio(self, component: str = "net_cf") -> F64:
        """Per-scenario portfolio value: the fold of the block partials in block order."""
        return fold(self.partials[:, PV_COMPONENTS.index(component), :])

    @property
    def result_hash(self) -> str:
        return result_hash(self.portfolio("net_cf"))


@dataclass
class _Buffer:
    region: Region
    shape: tuple[int, ...]


class PipelineRunner:
    """Runs pipelines on a `WasmPool` (its memory holds every buffer); models by name.

    Each run holds the pool's lease from layout to the copy of its outputs, so runners on
    one pool (one per package, or per request) may run from any threads at once.
    """

    def __init__(self, pool: WasmPool, binaries: Mapping[str, bytes] | None = None) -> None:
        self.pool = pool
        self._binaries = dict(binaries if binaries is not None else shipped_models())

    def _load(self, lease: RunLease, name: str) -> str:
        wasm = self._binaries.get(name)
        if wasm is None:
            raise PipelineError(f"wasm://{name}: no such model in the package")
        exports = lease.load(name, wasm).exports
        if exports >= ESG_EXPORTS:
            return "esg"
        if exports >= TERM_LIFE_EXPORTS:
            return "term_life"
        raise ModelLoadError(f"wasm://{name} exports neither the esg nor the term_life entry points of ABI v1")

    def run(
        self,
        config: Sequence[Mapping[str, Any] | PipelineNode],
        inputs: RunInputs,
        *,
        control: RunControl | None = None,
        blocks_per_call: int = 1,
    ) -> PipelineResult:
        control = control or RunControl()
        nodes = plan(config)
        try:
            inputs.assumptions.check_covers(inputs.policies)
        except ModelInputError as exc:
            raise InvalidModelInput(str(exc)) from exc
        with self.pool.lease(control) as lease:
            return self._run(lease, nodes, inputs, control, blocks_per_call)

    def _run(
        self, lease: RunLease, nodes: list[PipelineNode], inputs: RunInputs, control: RunControl, blocks_per_call: int
    ) -> PipelineResult:
        months = inputs.policies.horizon_months
        n_scen = inputs.scenarios.count
        mem = lease.memory
        alloc = LayoutBuilder(mem.run_base)
        bus: dict[str, _Buffer] = {}
        partials_name: str | None = None
        for node in nodes:
            kind = self._load(lease, node.model) if node.scheme == "wasm" else node.model
            if kind == "esg":
                self._need(node, ("$scenarios",), 0)
                shape: tuple[int, ...] = (n_scen, months)
                region = esg_rates(alloc, node.outputs[0], n_scen, months)
                mem.ensure(alloc.end)
                if node.scheme == "wasm":
                    run_esg(lease, node.model, alloc, inputs.scenarios, months, control=control, out=region)
                else:
                    control.check(f"node {node.id!r}")
                    mem.view(region, np.float64, shape)[:] = reference.esg(inputs.scenarios, months)
                bus[node.outputs[0]] = _Buffer(region, shape)
            elif kind == "term_life":
                rates = self._need(node, ("$policies", "$assumptions"), 1)
                src = bus[rates[0]]
                if len(src.shape) != 2 or src.shape[0] != n_scen or src.shape[1] < months:
                    raise PipelineError(f"node {node.id!r}: {rates[0]} is not a rates buffer [N][≥{months}]")
                blocks = block_count(len(inputs.policies))
                shape = (blocks, N_PV, n_scen)
                if node.scheme == "wasm":
                    result = run_term_life(
                        lease, node.model, alloc, inputs.policies, inputs.assumptions,
                        rates=src.region, n_scen=n_scen, rates_stride=src.shape[1], control=control,
                        blocks_per_call=blocks_per_call, name=node.id,
                    )  # fmt: skip
                    region = result.partials_region
                else:
                    control.check(f"node {node.id!r}")
                    region = alloc.add_array(node.outputs[0], shape, np.float64)
                    mem.ensure(alloc.end)
                    shocks = mem.view(src.region, np.float64, src.shape)
                    mem.view(region, np.float64, shape)[:] = reference_partials(
                        inputs.policies, inputs.assumptions, shocks
                    )
                bus[node.outputs[0]] = _Buffer(region, shape)
                partials_name = node.outputs[0]
            else:
                raise PipelineError(f"node {node.id!r}: unknown built-in engine {node.engine!r}")
        if partials_name is None:
            raise PipelineError("pipeline has no projection (term_life) node")
        buffers = {name: np.array(mem.view(b.region, np.float64, b.shape)) for name, b in bus.items()}
        return PipelineResult(buffers=buffers, partials=buffers[partials_name])

    @staticmethod
    def _need(node: PipelineNode, specials: tuple[str, ...], n_bus: int) -> list[str]:
        missing = [s for s in specials if s not in node.inputs]
        bus_inputs = [i for i in node.inputs if i.startswith(BUS)]
        if missing or len(bus_inputs) != n_bus or len(node.outputs) != 1:
            raise PipelineError(
                f"node {node.id!r} ({node.engine}) needs inputs {', '.join(specials)}"
                f"{' and one bus buffer' if n_bus else ''} and one output"
            )
        return bus_inputs


def reference_partials(policies: Policies, assumptions: Assumptions, shocks: F64) -> F64:
    """python://term_life as block partials f64 [blocks][5][N] (reference summation order)."""
    pvs = reference.term_life(policies, assumptions, shocks)
    parts = [reference.block_partials(getattr(pvs, name), BLOCK_SIZE) for name in PV_COMPONENTS]
    return np.stack(parts, axis=1)
