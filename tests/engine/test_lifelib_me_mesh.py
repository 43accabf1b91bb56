"""lifelib basiclife BasicTerm_ME's 10,000 model points through a mesh, against lifelib's totals.

The reference package with BasicTerm_ME's own tables (mortality, lapse, discount curve,
expenses, commission, loading) and one base scenario; BasicTerm_ME's model points — future
new business (duration_mth < 0) and policies maturing at t = 0 (duration_mth = 12·term) among
them, lifelib's premium per policy given — as a CSV dataset; uploaded through the Python client
to a data service, two engines and a gateway on loopback (their real servicers in this process,
tests.inprocess), valued in 5 chunks of 2 blocks. The
job's outputs equal lifelib's totals to 1e-12 relative, and its hash the in-process pipeline's.

Which lifelib total. lifelib computes mort_rate_mth = 1 − (1 − q)^(1/12) with numpy's power.
On a CPU with AVX-512, numpy (2.4.6 here) dispatches a vectorized pow that is not correctly
rounded: measured here, 52 of the 576 distinct (1 − q)^(1/12) of the table are 1 ulp off (up to
0.65 ulp error; libm's pow, which the models' wasi-libc pow equals on every cell, stays under
0.5 ulp). The subtraction from 1 turns 1 ulp of ≈ 1 into up to ~1e-12 of q_mth, so lifelib's PV
of claims is 7.7e-14 (relative) above the value with correctly rounded powers (the mesh's), and
PV net_cf — a difference, ~1/13 of claims — 1.04e-12 below. The numpy twin (services/engine/reference.py)
uses the same numpy power, so it agrees with that lifelib; given libm's pow for q_mth it agrees
with the mesh instead (to 1.3e-15 on claims). So lifelib's totals are taken from a run on
numpy's baseline code (NPY_DISABLE_CPU_FEATURES: every dispatched feature), in a subprocess —
the same model, formulas and data, with numpy's power then equal to libm's on every cell
(checked) — and the mesh equals them to 1e-12 (measured: 4.4e-16 at most). Against the lifelib
run in this process (test_lifelib_me's fixture, numpy as dispatched here), premiums, claims,
expenses and commissions still agree to 1e-12, and net_cf to 1e-12 of the sum of their
magnitudes (as test_lifelib_me judges a policy's net_cf).
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from livecalc.gateway.v1 import job_pb2
from services.bench.me.inputs import build_package
from services.client import Client, job_spec
from services.client.sync import collect
from services.engine.assumption_assets import lifelib_model_dir
from services.engine.pipeline import PipelineResult, PipelineRunner, RunInputs
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.valuation.assumptions import Assumptions
from services.valuation.blocks import BLOCK_SIZE, block_count
from services.valuation.interface.parser import interface_of
from services.valuation.interface.records import Records
from services.valuation.interface.tables import load_assets
from services.valuation.packages.package import verify_archive
from services.valuation.packages.reference import MODELS
from services.valuation.reference_model import term_life_declaration
from services.valuation.scenarios import ScenarioParams
from services.valuation.statistics import result_hash
from tests.engine import test_lifelib_me as me
from tests.engine.mesh import datasets_dir
from tests.inprocess import threaded_mesh

pd = pytest.importorskip("pandas")
pytest.importorskip("modelx")

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

lifelib_me = me.lifelib_me  # the module fixture: BasicTerm_ME run by modelx in this process

OUTPUTS = me.COMPONENTS  # the declaration's outputs, net_cf (the primary) last
RTOL = me.PORTFOLIO_RTOL  # 1e-12
CHUNK_BLOCKS = 2
DATASET = "basic_term_me"
COLUMNS = tuple(c["name"] for c in term_life_declaration()["policy"]["columns"])

Results = dict[str, Any]

# lifelib's BasicTerm_ME on numpy's baseline code (run with every dispatched CPU feature
# disabled): the exactly rounded sum (fsum) of each per-policy PV, result_pv()'s column sums,
# and whether numpy's power equals libm's (math.pow) on every (1 − q) of the mortality table.
_LIFELIB_BASELINE = """
import json, math, sys
import modelx as mx, numpy as np
p_model = mx.read_model(sys.argv[1])
try:
    p = p_model.Projection
    mort = p.mort_table.to_numpy(dtype=np.float64).ravel()
    x = 1.0 - np.minimum(1.0, mort)
    out = {
        "fsum": {n: math.fsum(np.asarray(getattr(p, "pv_" + n)(), dtype=np.float64)) for n in sys.argv[2:]},
        "result_pv": {k: float(v) for k, v in p.result_pv().sum().items()},
        "pow_is_libm": bool(np.all(np.power(x, 1.0 / 12.0) == [math.pow(v, 1.0 / 12.0) for v in x])),
    }
finally:
    p_model.close()
print(json.dumps(out))
"""
RESULT_PV_COLUMNS = dict(
    zip(OUTPUTS, ("PV Premiums", "PV Claims", "PV Expenses", "PV Commissions", "PV Net Cashflow"), strict=True)
)


def numpy_dispatched_features() -> list[str]:
    """The CPU features numpy dispatches at run time (disabled all: its baseline code)."""
    try:
        umath = importlib.import_module("numpy._core._multiarray_umath")  # numpy ≥ 2
    except ImportError:  # pragma: no cover
        umath = importlib.import_module("numpy.core._multiarray_umath")  # numpy 1.x
    return [str(feature) for feature in umath.__cpu_dispatch__]


@pytest.fixture(scope="module")
def lifelib_baseline() -> Results:
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(numpy_dispatched_features())}
    done = subprocess.run(
        [sys.executable, "-c", _LIFELIB_BASELINE, str(lifelib_model_dir("BasicTerm_ME")), *OUTPUTS],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out: Results = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def me_assumptions(lifelib_me: Results) -> Assumptions:
    """BasicTerm_ME's tables from its own files (mortality by age from 18, the annual discount
    curve), its lapse max(0.1 − 0.02·y, 0.02) (from year 5 on 0.02, carried forward) and its
    scalars (acquisition 300, maintenance 60, inflation 0.01, loading 0.5; commissions 100 % of
    year-0 premiums); checked against what the model itself used."""
    folder = lifelib_model_dir("BasicTerm_ME")
    mort = pd.read_excel(folder / "mort_table.xlsx", index_col=0)
    mort = mort[sorted(mort.columns, key=int)]
    disc = pd.read_excel(folder / "disc_rate_ann.xlsx", index_col=0)
    ages, years = [int(a) for a in mort.index], [int(y) for y in disc.index]
    assert ages == list(range(ages[0], ages[0] + len(ages))) and years == list(range(len(years)))
    mortality, curve = mort.to_numpy(dtype=np.float64), disc.iloc[:, 0].to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(mortality, lifelib_me["mort_table"])
    np.testing.assert_array_equal(curve, lifelib_me["disc_rate_ann"])
    lapse = np.array([max(0.1 - 0.02 * y, 0.02) for y in range(6)])
    np.testing.assert_array_equal(lapse[np.minimum(np.arange(10), lapse.size - 1)], lifelib_me["lapse_rate"])
    acq, maint, inflation, loading = lifelib_me["scalars"]
    return Assumptions(
        mortality=mortality,
        mortality_min_age=ages[0],
        lapse=lapse,
        expense_acq=float(acq),
        expense_maint=float(maint),
        inflation=float(inflation),
        commission_rate=1.0,
        premium_loading=float(loading),
        curve=curve,
    )


def me_dataset(path: Path, lifelib_me: Results) -> pa.Table:
    """BasicTerm_ME's model points as a CSV of the term-life declaration's columns (floats as
    repr, so they read back exactly), premium_pp lifelib's; the table as the mesh reads it."""
    columns = me.model_point_columns(lifelib_me)
    assert tuple(columns) == COLUMNS
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in zip(*(columns[c].tolist() for c in COLUMNS), strict=True):
            writer.writerow([repr(v) if isinstance(v, float) else v for v in row])
    table = pacsv.read_csv(path)
    for name in ("policy_count", "sum_assured", "premium_pp"):
        np.testing.assert_array_equal(table.column(name).to_numpy().astype(np.float64), columns[name])
    return table


def in_process_run(archive: bytes, table: pa.Table) -> PipelineResult:
    """The package's own pipeline and binaries run in this process on ``table``, its rows laid
    out by the package's declaration, its tables and parameters from its files."""
    package = verify_archive(archive)
    interface = interface_of(package.config)
    assets = load_assets(interface, package.files.get)
    records = Records.from_table(table, interface, assets.bounds)
    scenarios = ScenarioParams(**package.config["scenarios"])
    binaries = {name: package.files[f"wasm/{name}.wasm"] for name in MODELS}
    with WasmPool(Runtime(), threads=2) as pool:
        return PipelineRunner(pool, binaries).run(
            package.config["pipeline"], RunInputs(interface, records, assets, scenarios)
        )


@dataclass
class MeshRun:
    archive: bytes
    table: pa.Table
    events: list[job_pb2.JobEvent]
    result: job_pb2.JobResult
    engine_steps: list[float]
    seconds: float

    def output(self, name: str) -> job_pb2.OutputResult:
        return next(o for o in self.result.outputs if o.name == name)


@pytest.fixture(scope="module")
def mesh_run(tmp_path_factory: pytest.TempPathFactory, lifelib_me: Results) -> Iterator[MeshRun]:
    """One job of BasicTerm_ME's points on a data service, two engines and a gateway (in this process)."""
    tmp = tmp_path_factory.mktemp("lifelib_me_mesh")
    archive = build_package(tmp / "model", me_assumptions(lifelib_me))
    table = me_dataset(tmp / f"{DATASET}.csv", lifelib_me)
    root = datasets_dir(tmp)
    with threaded_mesh(tmp, datasets=root, engines=2) as mesh:
        with Client(mesh.gateway, data=mesh.data, timeout=60) as lc:
            assert lc.upload_dataset(tmp / f"{DATASET}.csv").row_count == table.num_rows
            package_hash = lc.upload_package_bytes(archive).package.package_hash
            started = time.monotonic()
            events = list(lc.submit(job_spec(package_hash, DATASET, chunk_blocks=CHUNK_BLOCKS)))
            seconds = time.monotonic() - started
        result = collect(iter(events))
        steps = [mesh.metric(e, "livecalc_engine_steps_total") for e in mesh.engines]
    yield MeshRun(archive, table, events, result, steps, seconds)


def test_the_points_hold_future_new_business_and_policies_maturing_at_t0(mesh_run: MeshRun) -> None:
    d = mesh_run.table.column("duration_mth").to_numpy()
    term = mesh_run.table.column("policy_term").to_numpy()
    assert mesh_run.table.num_rows == 10_000 and tuple(mesh_run.table.column_names) == COLUMNS
    assert set(mesh_run.table.column("sex").to_pylist()) == {"M", "F"}
    future, matured = d < 0, d == 12 * term
    print(f"future new business {future.sum()} (from t = {-d.min()}), maturing at t = 0 {matured.sum()}")
    assert future.any() and matured.any()


def test_the_package_carries_basic_term_mes_tables_and_one_base_scenario(
    mesh_run: MeshRun, lifelib_me: Results
) -> None:
    package = verify_archive(mesh_run.archive)
    assert package.config["scenarios"]["count"] == 1 and package.config["scenarios"]["include_base"] is True
    interface = interface_of(package.config)
    assets = load_assets(interface, package.files.get)
    mortality, lapse, curve = (assets.table(n) for n in ("mortality", "lapse", "curve"))
    np.testing.assert_array_equal(mortality.values, lifelib_me["mort_table"])
    assert mortality.origin == (18, 0) and mortality.shape == (103, 6)  # ages 18..120 × select years 0..5
    np.testing.assert_array_equal(curve.values, lifelib_me["disc_rate_ann"])
    np.testing.assert_array_equal(lapse.values[np.minimum(np.arange(10), 5)], lifelib_me["lapse_rate"])
    parameters = dict(zip((p.name for p in interface.parameters), assets.parameters, strict=True))
    acq, maint, inflation, loading = lifelib_me["scalars"]
    assert parameters == {
        "female_multiplier": 1.0,  # BasicTerm_ME ignores sex
        "expense_acq": acq,
        "expense_maint": maint,
        "inflation": inflation,
        "commission_rate": 1.0,
        "premium_loading": loading,
        "dyn_lapse_beta": 0.0,
        "dyn_lapse_lo": 0.5,
        "dyn_lapse_hi": 2.0,
    }


def test_the_mesh_ran_it_in_chunks_on_both_engines_and_matches_the_in_process_pipeline(mesh_run: MeshRun) -> None:
    accepted, result = mesh_run.events[0].accepted, mesh_run.result
    blocks = block_count(mesh_run.table.num_rows)
    assert blocks == math.ceil(10_000 / BLOCK_SIZE) == 10
    assert accepted.blocks_total == blocks and accepted.chunks_total == math.ceil(blocks / CHUNK_BLOCKS)
    assert all(steps > 0 for steps in mesh_run.engine_steps), mesh_run.engine_steps
    assert sum(mesh_run.engine_steps) == result.steps
    d = mesh_run.table.column("duration_mth").to_numpy().astype(np.int64)
    assert result.steps == int((12 * mesh_run.table.column("policy_term").to_numpy() - d).sum())  # 1 scenario
    assert result.policy_count == 10_000 and result.statistics.scenario_count == 1

    local = in_process_run(mesh_run.archive, mesh_run.table)
    assert [o.name for o in result.outputs] == list(local.outputs.names) == list(OUTPUTS)
    assert [o.primary for o in result.outputs] == [name == "net_cf" for name in OUTPUTS]
    assert result.result_hash == local.result_hash == result_hash(mesh_run.output("net_cf").values)
    for name in OUTPUTS:
        assert list(mesh_run.output(name).values) == local.portfolio(name).tolist(), name
    print(f"mesh job: {mesh_run.seconds:.2f} s, {accepted.chunks_total} chunks, engine steps {mesh_run.engine_steps}")


def test_the_mesh_equals_lifelib_basic_term_mes_totals(mesh_run: MeshRun, lifelib_baseline: Results) -> None:
    """The Must show: every output of the job equals lifelib's total to 1e-12 relative (lifelib on
    numpy's baseline code, where its power is libm's: see the module docstring)."""
    assert lifelib_baseline["pow_is_libm"]
    for name in OUTPUTS:
        (ours,) = mesh_run.output(name).values
        theirs, column = lifelib_baseline["fsum"][name], lifelib_baseline["result_pv"][RESULT_PV_COLUMNS[name]]
        print(f"pv_{name}: mesh {ours!r}, lifelib {theirs!r}, relative {abs(ours / theirs - 1):.2e}")
        assert ours == pytest.approx(theirs, rel=RTOL, abs=0), name
        assert ours == pytest.approx(column, rel=RTOL, abs=0), name


def test_against_lifelib_on_numpys_dispatched_power(mesh_run: MeshRun, lifelib_me: Results) -> None:
    """lifelib in this process, its q_mth from numpy's power as dispatched on this CPU (1 ulp off
    on some cells with AVX-512): the four components to 1e-12, net_cf to 1e-12 of their
    magnitudes (and relative 1e-12 where numpy's power is libm's)."""
    mort = lifelib_me["mort_table"].ravel()
    x = 1.0 - np.minimum(1.0, mort)
    pow_is_libm = bool(np.all(np.power(x, 1.0 / 12.0) == [math.pow(v, 1.0 / 12.0) for v in x]))
    theirs = {name: math.fsum(lifelib_me[name]) for name in OUTPUTS}
    ours = {name: mesh_run.output(name).values[0] for name in OUTPUTS}
    for name in OUTPUTS:
        print(f"pv_{name}: relative {abs(ours[name] / theirs[name] - 1):.2e} (numpy's power is libm's: {pow_is_libm})")
    for name in OUTPUTS[:4]:
        assert ours[name] == pytest.approx(theirs[name], rel=RTOL, abs=0), name
    magnitude = sum(abs(theirs[name]) for name in OUTPUTS[:4])
    assert abs(ours["net_cf"] - theirs["net_cf"]) <= RTOL * magnitude
    if pow_is_libm:
        assert ours["net_cf"] == pytest.approx(theirs["net_cf"], rel=RTOL, abs=0)
