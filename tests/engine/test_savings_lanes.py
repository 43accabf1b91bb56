"""The savings kernel's scenario grouping does not touch a bit: the shipped build (32 scenarios per
group, a partly filled last group computed 8 lanes at a time) gives, bit for bit, the block partials
of the build it replaced (8 scenarios per group), frozen as ``bench_data/savings_lanes8.wasm``
(`LANES8_BUILD`), for scenario counts on every side of a group's and a narrow pass's edges, one
scenario included, and over several blocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources

import numpy as np
import pytest

from services.engine.bench_savings import LANES8_BUILD
from services.engine.layout import LayoutBuilder, scenario_buffer
from services.engine.reference_savings import savings_inputs
from services.engine.runtime import Runtime
from services.engine.wasm_nodes import ScenarioBuffer, run_projection
from services.engine.workers import RunControl, WasmPool
from services.valuation.arrays import F64
from services.valuation.reference_model import shipped_models
from tests.engine.savings_points import draws, generated_rows

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pool() -> Iterator[WasmPool]:
    with WasmPool(Runtime(), threads=2) as pool:
        yield pool


def partials(pool: WasmPool, binary: bytes, rows_seed: int, n_rows: int, n_scen: int) -> F64:
    """One savings node of ``binary`` over generated rows under ``n_scen`` scenarios of draws."""
    rows = generated_rows(n_rows, seed=rows_seed)
    months = int(savings_inputs(rows, np.zeros((1, 1200))).records.horizon_months)
    z = draws(n_scen, months, seed=n_scen)
    inputs = savings_inputs(rows, z)
    with pool.lease() as lease:
        lease.load("savings", binary)
        alloc = LayoutBuilder(lease.memory.run_base)
        region = scenario_buffer(alloc, "std_norm", n_scen, months)
        lease.memory.ensure(alloc.end)
        lease.memory.view(region, np.float64, z.shape)[:] = z
        result = run_projection(
            lease, "savings", alloc, inputs.interface, records=inputs.records, assets=inputs.assets,
            scenarios={"std_norm": ScenarioBuffer(region, n_scen, months)}, n_scen=n_scen, control=RunControl(),
        )  # fmt: skip
        return result.partials


@pytest.mark.parametrize(("n_rows", "n_scen"), [(200, 1), (200, 7), (200, 8), (200, 9), (200, 31), (200, 32),
                                                (200, 33), (200, 40), (2100, 70)])  # fmt: skip
def test_the_shipped_build_gives_the_8_lane_builds_bits(pool: WasmPool, n_rows: int, n_scen: int) -> None:
    frozen = (resources.files("services.engine") / "bench_data" / LANES8_BUILD).read_bytes()
    shipped = partials(pool, shipped_models()["savings"], 11, n_rows, n_scen)
    assert shipped.shape == (-(-n_rows // 1024), 9, n_scen)
    assert shipped.tobytes() == partials(pool, frozen, 11, n_rows, n_scen).tobytes()
