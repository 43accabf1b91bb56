"""The SDK's build: the interface digest, `package init --template c`, `package build` (reproducible
bytes, a --global-base clear of the generator's data) and validation that reports a binary built
for another declaration together with every other problem."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import wasmtime

from services.cli import main
from services.common.wasm_binary import StaticData, read_module, static_data
from services.engine import reference
from services.engine.abi import FEATURE_CASH_FLOWS, FEATURE_ROW_VALUES
from services.engine.bench_term_life import scenario_layout_wasm
from services.engine.pipeline import PipelineRunner, RunDetail
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.valuation.interface.parser import interface_of
from services.valuation.interface.records import Records
from services.valuation.packages.package import build_directory, check_directory
from services.valuation.packages.report import Issue
from services.valuation.packages.wasm_checks import check_binary
from services.valuation.reference_model import shipped_models
from services.valuation.sdk.build import STATIC_LIMIT, BuildError, build_model, choose_global_base, compile_wasm
from services.valuation.sdk.c_header import render_header
from services.valuation.sdk.digest import digest_text, interface_digest
from services.valuation.sdk.template import init_c_template
from tests.sdk.endowment import Package, discount_factors, endowment_pvs
from tests.support import ROOT

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``package init endowment --template c``, built (read-only: copy it to change it)."""
    root = tmp_path_factory.mktemp("sdk") / "endowment"
    made = init_c_template(root)
    assert made.build is not None and made.build.path == root / "wasm" / "model.wasm"
    return root


def _config(root: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((root / "livecalc.config.json").read_text(encoding="utf-8"))
    return loaded


def _write_config(root: Path, config: dict[str, Any]) -> None:
    (root / "livecalc.config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def _copy(template: Path, tmp_path: Path, name: str = "endowment") -> Path:
    dest = tmp_path / name
    shutil.copytree(template, dest)
    return dest


def _texts(issues: list[Issue]) -> str:
    return "\n".join(str(i) for i in issues)


# ---------------------------------------------------------------------------
# the digest


def test_digest_covers_what_the_code_reads_by_position_and_nothing_else(template: Path) -> None:
    raw = _config(template)["interface"]
    base = interface_digest(interface_of({"interface": raw}))

    def digest(change: Any) -> int:
        changed = copy.deepcopy(raw)
        change(changed)
        return interface_digest(interface_of({"interface": changed}))

    columns = raw["policy"]["columns"]
    layout_changes = [
        lambda d: d["policy"]["columns"].insert(1, {"name": "smoker", "type": "int32", "default": 0}),
        lambda d: d["policy"]["columns"][5].update(name="sum_insured"),
        lambda d: d["policy"]["columns"][1].update(type="int64"),
        lambda d: d["policy"]["columns"][2].update(values=["F", "M"]),
        lambda d: d["policy"]["columns"].reverse(),
        lambda d: d["tables"][0]["axes"].pop(),
        lambda d: d["parameters"][0].update(type="int64", key="valuation_rate"),
        lambda d: d["parameters"].append({"name": "tax_rate", "value": 0.2}),
        lambda d: d["scenario_inputs"].append({"name": "equity"}),
        lambda d: d["outputs"].insert(0, {"name": "tax"}),
        lambda d: d["outputs"][0].update(monthly=not d["outputs"][0].get("monthly", False)),
    ]
    same_layout = [
        lambda d: d["policy"]["columns"][1].update(min=18, description="changed"),
        lambda d: d["policy"]["rules"].pop(),
        lambda d: d["policy"].update(horizon_months="1"),
        lambda d: d["tables"][0].update(file="assumptions/other.csv", max=0.9),
        lambda d: d["tables"][0]["axes"][0].update(first=0),
        lambda d: d["parameters"][1].update(default=0.1, min=0.01),
        lambda d: [o.pop("primary", None) for o in d["outputs"]] and d["outputs"][0].update(primary=True),
    ]
    assert len({base, *(digest(c) for c in layout_changes)}) == 1 + len(layout_changes)
    assert {digest(c) for c in same_layout} == {base}
    assert columns == _config(template)["interface"]["policy"]["columns"]  # deep copies only


def test_a_declaration_without_monthly_outputs_keeps_its_digest() -> None:
    """Monthly outputs came later: a declaration with none has the digest binaries built before
    them carry (the frozen term_life build of services/engine/bench_data, from the shipped
    declaration less its monthly flags), so packages users built then still pass validation."""
    raw = json.loads((ROOT / "services/valuation/reference_model/term_life.interface.json").read_text("utf-8"))
    assert any(o.get("monthly") for o in raw["outputs"])
    for output in raw["outputs"]:
        output.pop("monthly", None)
    frozen = read_module(scenario_layout_wasm()).constants["lc_interface_digest"] & 0xFFFFFFFF
    assert interface_digest(interface_of({"interface": raw})) == frozen


def test_header_defines_the_digest_and_exports_it(template: Path) -> None:
    interface = interface_of(_config(template))
    header = render_header(interface)
    assert f"#define LC_INTERFACE_DIGEST {digest_text(interface_digest(interface))}u" in header
    assert (template / "src" / "include" / "model_interface.h").read_text(encoding="utf-8") == header
    built = read_module((template / "wasm" / "model.wasm").read_bytes())
    assert built.constants["lc_interface_digest"] & 0xFFFFFFFF == interface_digest(interface)
    term_life = read_module(shipped_models()["term_life"])  # the shipped projection carries its own
    assert "lc_interface_digest" in term_life.constants


# ---------------------------------------------------------------------------
# init and build


def test_init_writes_a_valid_package_with_the_shipped_generator(template: Path) -> None:
    assert check_directory(template) == []
    assert (template / "wasm" / "esg.wasm").read_bytes() == shipped_models()["esg"]
    assert _config(template)["name"] == "endowment"
    for path in ("README.md", "src/model.c", "src/include/livecalc_model.h", "data/sample_policies.csv"):
        assert (template / path).is_file(), path
    _archive, package = build_directory(template)
    assert not any(p.startswith("src/") or p == "README.md" for p in package.files)  # the author's, not packed
    assert "data/sample_policies.csv" in package.files


def test_rebuilding_gives_identical_bytes_anywhere(template: Path, tmp_path: Path) -> None:
    wasm = (template / "wasm" / "model.wasm").read_bytes()
    elsewhere = _copy(template, tmp_path / "deeper" / "path")
    (elsewhere / "wasm" / "model.wasm").unlink()
    made = build_model(elsewhere)
    assert not made.header_changed
    assert made.path.read_bytes() == wasm
    again = build_model(elsewhere)
    assert again.path.read_bytes() == wasm and again.global_base == made.global_base
    first, package = build_directory(elsewhere, source_date_epoch=0)
    second, _ = build_directory(elsewhere, source_date_epoch=0)
    assert first == second
    assert package.package_hash == build_directory(template)[1].package_hash


def test_static_data_goes_to_the_first_free_slot_above_the_generator(template: Path) -> None:
    esg = static_data(read_module(shipped_models()["esg"]))
    assert esg.start == 64 * 1024 and esg.end <= 128 * 1024
    assert choose_global_base(64 * 1024, [esg]) == 128 * 1024
    model = static_data(read_module((template / "wasm" / "model.wasm").read_bytes()))
    assert model.start == 128 * 1024 and not model.overlaps(esg)
    assert choose_global_base(4096, [StaticData(64 * 1024, 300 * 1024, False)]) == 320 * 1024
    assert choose_global_base(4096, [StaticData(0, 0, False)]) == 64 * 1024  # empty regions take no room
    with pytest.raises(BuildError, match="no room below 1 MiB"):
        choose_global_base(STATIC_LIMIT, [esg])


def test_a_model_that_imports_anything_but_memory_does_not_build(tmp_path: Path) -> None:
    (tmp_path / "m.c").write_text(
        '#include <stdio.h>\n__attribute__((export_name("lc_run_blocks"))) int run(int a) { return printf("%d", a); }'
    )
    with pytest.raises(BuildError, match=r"may import only env\.memory"):
        compile_wasm(["m.c"], cwd=tmp_path, global_base=128 * 1024, include_dirs=[])


# ---------------------------------------------------------------------------
# validation: every problem at once


BROKEN = r"""
#include "livecalc_model.h"
#include "model_interface.h"
/* no lc_abi_version; lc_prepare with one parameter too many */
LC_EXPORT(lc_prepare) int32_t lc_prepare(uint32_t ctx, uint32_t extra) { return (int32_t)(ctx + extra); }
LC_EXPORT(lc_run_blocks) int32_t lc_run_blocks(uint32_t ctx, uint32_t b0, uint32_t b1) {
    return (int32_t)(ctx + b0 + b1);
}
"""


def test_a_binary_for_another_declaration_is_reported_with_every_other_problem(template: Path, tmp_path: Path) -> None:
    root = _copy(template, tmp_path)
    (root / "src" / "model.c").write_text(BROKEN, encoding="utf-8")
    build_model(root)  # against the template's declaration
    old = interface_digest(interface_of(_config(root)))
    config = _config(root)
    interface = config["interface"]
    interface["policy"]["columns"].append({"name": "smoker", "type": "category", "values": ["N", "Y"], "default": "N"})
    interface["policy"]["rules"].append({"column": "smoker", "check": "smoker_status == 1"})
    interface["tables"][0]["axes"][1]["size"] = 3
    _write_config(root, config)
    new = interface_digest(interface_of({"interface": {**interface, "policy": {
        **interface["policy"], "rules": interface["policy"]["rules"][:-1]}}}))  # fmt: skip
    text = _texts(check_directory(root))
    assert (
        f"error: wasm/model.wasm: was built for another declaration (digest {digest_text(old)}, the config's is "
        f"{digest_text(new)}): run livecalc package build"
    ) in text, text
    assert "wasm/model.wasm: a projection must export lc_abi_version" in text, text
    assert "export lc_prepare has signature (i32, i32) -> (i32); the model ABI needs (i32) -> (i32)" in text, text
    assert "'smoker_status', which is not a declared column" in text, text
    assert "assumptions/mortality.csv: wrong table shape" in text, text


def test_a_module_of_no_kind_and_one_without_the_digest() -> None:
    memory = '(import "env" "memory" (memory 1 65536 shared))'
    _, issues = check_binary("wasm/x.wasm", bytes(wasmtime.wat2wasm(f"(module {memory})")))
    assert [i.message for i in issues] == [
        "exports neither lc_run_blocks (a projection) nor lc_prepare_scenarios (a scenario generator): not a model "
        "of the model ABI"
    ]


def test_a_projection_without_the_digest_is_a_warning(template: Path, tmp_path: Path) -> None:
    root = _copy(template, tmp_path)
    abi = '(func (export "lc_abi_version") (result i32) i32.const 2)'
    blocks = '(func (export "lc_run_blocks") (param i32 i32 i32) (result i32) i32.const 0)'
    memory = '(import "env" "memory" (memory 1 65536 shared))'
    (root / "wasm" / "model.wasm").write_bytes(bytes(wasmtime.wat2wasm(f"(module {memory} {abi} {blocks})")))
    assert [(i.severity, i.where) for i in check_directory(root)] == [("warning", "wasm/model.wasm")]


# ---------------------------------------------------------------------------
# the commands


def test_build_command_prints_the_compiler_and_the_package_problems_at_once(
    template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(template, tmp_path)
    source = root / "src" / "model.c"
    source.write_text(source.read_text(encoding="utf-8") + "\nstatic int broken = param_nope(c);\n", encoding="utf-8")
    (root / "assumptions" / "basis.json").write_text('{"valuation_rate": 0.03}', encoding="utf-8")
    assert main(["package", "build", str(root)]) == 1
    err = capsys.readouterr().err
    assert "model.c:" in err and "param_nope" in err, err
    assert "error: the C did not compile (model.c)" in err, err
    assert "assumptions/basis.json:$.lapse_rate: is missing" in err, err
    assert "was built for another declaration" not in err  # the stale binary is not news after a failed compile
    assert f"{root}: not built: 3 errors" in err, err
    assert not (tmp_path / "endowment.zip").exists()


def test_build_command_writes_dir_zip_and_init_keeps_the_reference(
    template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(template, tmp_path)
    assert main(["package", "build", str(root)]) == 0
    out = capsys.readouterr().out
    assert "compiled" in out and f"built {tmp_path / 'endowment.zip'}" in out, out
    reference = tmp_path / "reference"
    assert main(["package", "init", str(reference)]) == 0
    assert "interface" in _config(reference) and check_directory(reference) == []
    assert main(["package", "build", str(reference), "--out", str(tmp_path / "ref.zip")]) == 0
    assert (tmp_path / "ref.zip").is_file()


def test_the_template_writes_row_values_and_cash_flows(template: Path) -> None:
    """The template's model says it writes both (lc_features 3): its row values add up to its block
    partials bit for bit and agree with the numpy endowment, and its monthly cash flows, discounted,
    are its present values."""
    wasm = (template / "wasm" / "model.wasm").read_bytes()
    assert read_module(wasm).constants["lc_features"] == FEATURE_ROW_VALUES | FEATURE_CASH_FLOWS
    package = Package.read(template)
    rng = np.random.default_rng(11)
    n = 1500
    term = rng.integers(1, 21, n)
    table = pa.table({
        "policy_id": np.arange(n, dtype=np.int64), "age_at_entry": rng.integers(20, 60, n).astype(np.int32),
        "sex": rng.integers(0, 2, n).astype(np.int32), "policy_term": term.astype(np.int32),
        "duration_mth": (rng.random(n) * 12 * term).astype(np.int32), "sum_assured": rng.uniform(1e4, 1e6, n),
        "premium_pp": rng.uniform(10.0, 500.0, n), "policy_count": rng.uniform(1.0, 3.0, n),
    })  # fmt: skip
    records = Records.from_table(table, package.interface, package.bounds)
    with WasmPool(Runtime(), threads=2) as pool:
        run = PipelineRunner(pool, package.binaries()).run(
            package.config["pipeline"], package.run_inputs(records), detail=RunDetail(row_values=True, cash_flows=True)
        )
    assert run.row_values is not None and run.cash_flows is not None
    blocks = np.zeros_like(run.partials)
    for i, row in enumerate(run.row_values):
        blocks[i // 1024] += row
    assert np.array_equal(blocks.view(np.uint64), run.partials.view(np.uint64))
    pvs = endowment_pvs(package, records)
    for k, name in enumerate(run.outputs.names):
        np.testing.assert_allclose(run.row_values[:, k, :], pvs[name], rtol=1e-9, atol=1e-9, err_msg=name)
    assert run.monthly_outputs == run.outputs.names
    months = records.horizon_months
    df = discount_factors(package.parameter("valuation_rate"), reference.esg(package.scenarios, months))
    discounted = np.einsum("bmst,st->bms", run.cash_flows, df)
    np.testing.assert_allclose(discounted, run.partials, rtol=1e-9, atol=1e-6)
