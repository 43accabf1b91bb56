"""The savings product's first hour: `livecalc datasets generate --model savings` writes policies the
savings declaration accepts (four products, term and whole life, in force and new business),
`livecalc package init DIR --model savings` writes the savings reference package (normals →
savings), and `livecalc run --model savings` values generated savings policies through a real mesh
(dataset, preview, full run, table, plot, results.json naming the savings outputs) with the hash
of the same job run in this process.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from services.data.generate import SAVINGS_PRODUCTS, SAVINGS_SCHEMA, generate
from services.engine.pipeline import PipelineRunner, RunInputs
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.valuation.interface.parser import interface_of
from services.valuation.interface.records import Records, package_rules
from services.valuation.interface.tables import load_assets
from services.valuation.packages.manifest import CONFIG
from services.valuation.packages.package import build_directory, verify_archive
from services.valuation.packages.reference import savings_config
from services.valuation.reference_model import savings_assumption_files, savings_declaration, shipped_models
from services.valuation.scenarios import ScenarioParams
from services.valuation.statistics import result_hash, statistics
from tests.client.clitools import free_port_offset, hash_line, livecalc, png_size

SAVINGS_OUTPUTS = [o["name"] for o in savings_declaration()["outputs"]]
ROWS, SCENARIOS, PREVIEW = 3000, 100, 500


def savings_records(path: Path) -> Records:
    """The rows of ``path`` as the savings declaration reads them (every rule checked)."""
    files = {f"assumptions/{name}": data for name, data in savings_assumption_files().items()}
    interface, bounds = package_rules(savings_config(), files.get)
    return Records.from_table(pq.read_table(path), interface, bounds)


def test_generated_savings_policies_keep_the_declaration(tmp_path: Path) -> None:
    out = tmp_path / "savings.parquet"
    done = livecalc("datasets", "generate", "--model", "savings", "--rows", "20000", "--seed", "5", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "wrote 20,000 savings policies" in done.stdout
    records = savings_records(out)  # raises, naming rows and rules, if any row breaks one
    assert len(records) == 20_000
    table = pq.read_table(out).to_pandas()
    assert set(table["spec_id"]) == {p.spec_id for p in SAVINGS_PRODUCTS}
    assert set(table["premium_type"]) == {"SINGLE", "LEVEL"} and set(table["is_wl"]) == {"true", "false"}
    assert table["age_at_entry"].between(20, 59).all() and table["age_at_entry"].nunique() == 40
    assert set(table.loc[table["is_wl"] == "false", "policy_term"]) == {10, 15, 20}
    in_force = table["duration_mth"] > 0
    assert 0.2 < in_force.mean() < 0.4
    assert (table.loc[in_force, "av_pp_init"] > 0).all() and (table.loc[~in_force, "av_pp_init"] == 0).all()
    assert records.horizons.min() > 0 and records.horizon_months == 12 * (115 - 20)  # whole life from age 20
    again = tmp_path / "again.csv"
    generate(again, 20_000, 5, model="savings")
    assert pq.read_table(out).to_pydict() == savings_table_from_csv(again).to_pydict()  # the same rows either way


def savings_table_from_csv(path: Path) -> pa.Table:
    options = pacsv.ConvertOptions(column_types=SAVINGS_SCHEMA, strings_can_be_null=False)
    return pacsv.read_csv(path, convert_options=options)


def test_package_init_model_savings_writes_the_savings_reference(tmp_path: Path) -> None:
    dest = tmp_path / "savings"
    done = livecalc("package", "init", str(dest), "--model", "savings")
    assert done.returncode == 0, done.stderr
    assert "normals → savings" in done.stdout
    assert json.loads((dest / CONFIG).read_text()) == savings_config()
    for name in ("normals", "savings"):
        assert (dest / "wasm" / f"{name}.wasm").read_bytes() == shipped_models()[name]
    for name, data in savings_assumption_files().items():
        assert (dest / "assumptions" / name).read_bytes() == data
    _, package = build_directory(dest, source_date_epoch=0)  # validates: PackageInvalid on any error
    assert package.config["name"] == "savings-reference" and not package.warnings
    refused = livecalc("package", "init", str(tmp_path / "c"), "--model", "savings", "--template", "c")
    assert refused.returncode != 0 and "--model savings" in refused.stderr


def in_process_hash(data_dir: Path, dataset_id: str) -> tuple[str, int]:
    """(result hash, policies) of the demo's full job run in this process from its dataset file and
    package archive: the pipeline runner over the package's own WASM binaries."""
    package = verify_archive((data_dir / "models" / "savings-reference.zip").read_bytes())
    interface = interface_of(package.config)
    assets = load_assets(interface, package.files.get)
    records = Records.from_table(
        pq.read_table(data_dir / "datasets" / f"{dataset_id}.parquet"), interface, assets.bounds
    )
    configured = package.config["scenarios"]
    params = ScenarioParams(count=SCENARIOS, seed=configured["seed"], include_base=configured["include_base"])
    wasm = {p.removeprefix("wasm/").removesuffix(".wasm"): b for p, b in package.files.items() if p.startswith("wasm/")}
    with WasmPool(Runtime(), threads=2) as pool:
        run = PipelineRunner(pool, wasm).run(package.config["pipeline"], RunInputs(interface, records, assets, params))
    return run.result_hash, len(records)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_livecalc_run_model_savings_through_a_mesh(tmp_path: Path) -> None:
    data_dir, out_dir = tmp_path / "data", tmp_path / "out"
    argv = ["run", "--model", "savings", "--rows", str(ROWS), "--scenarios", str(SCENARIOS), "--preview", str(PREVIEW)]
    argv += ["--port-offset", str(free_port_offset()), "--out-dir", str(out_dir), "--data-dir", str(data_dir)]
    done = livecalc(*argv, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"dataset   savings-{ROWS}: generated {ROWS:,} policies" in out
    assert "package   built" in out and "package   savings-reference 1.0.0 uploaded" in out
    assert f"Preview: a seeded sample of {PREVIEW:,} policies" in out and "preview was within" in out
    assert "mesh      stopped" in out

    doc = json.loads((out_dir / "results.json").read_text())
    assert [o["name"] for o in doc["outputs"]] == SAVINGS_OUTPUTS
    (primary,) = [o for o in doc["outputs"] if o["primary"]]
    assert doc["primary_output"] == primary["name"] == "net_cf"
    assert doc["dataset_id"] == f"savings-{ROWS}" and doc["policy_count"] == ROWS
    values = np.array(primary["values"], dtype=np.float64)
    assert values.size == SCENARIOS and doc["statistics"]["mean"] == statistics(values).mean
    assert doc["result_hash"] == result_hash(values) == hash_line(out)
    for o in doc["outputs"]:
        assert len(o["values"]) == SCENARIOS and np.all(np.isfinite(o["values"])), o["name"]
    assert png_size(out_dir / "distribution.png")[0] > 0

    expected, policies = in_process_hash(data_dir, f"savings-{ROWS}")
    assert policies == ROWS and doc["result_hash"] == expected
