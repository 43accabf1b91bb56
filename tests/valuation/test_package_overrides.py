"""Deriving a package by overriding declared tables and parameters (services/valuation/packages/overrides.py).

The reference term-life and savings packages, built from `package init`'s directories: each change
lands where the declaration says the value lives, reads back as exactly the float64 computed,
and leaves a package that verifies; the same changes give the same archive; what the
declaration forbids is refused with the override's index.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.valuation.interface.parser import interface_of
from services.valuation.interface.tables import load_assets
from services.valuation.packages.overrides import Override, derive, derived_archive
from services.valuation.packages.package import Package, build_directory, verify_archive
from services.valuation.packages.reference import init_directory
from services.valuation.packages.report import PackageInvalid


def reference(tmp: Path, model: str = "term_life") -> Package:
    init_directory(tmp / model, model=model)
    return build_directory(tmp / model, source_date_epoch=0)[1]


@pytest.fixture(scope="module")
def term_life(tmp_path_factory: pytest.TempPathFactory) -> Package:
    return reference(tmp_path_factory.mktemp("overrides"))


def assets(package: Package) -> tuple[dict[str, np.ndarray], dict[str, float | int]]:
    interface = interface_of(package.config)
    loaded = load_assets(interface, package.files.get)
    tables = {t.name: t.values for t in loaded.tables}
    return tables, dict(zip((p.name for p in interface.parameters), loaded.parameters, strict=True))


def test_a_scaled_table_reads_back_as_the_exact_products(term_life: Package) -> None:
    derived = verify_archive(derived_archive(term_life, [Override("table", "lapse", "scale", 0.7)]))
    before, after = assets(term_life)[0], assets(derived)[0]
    assert np.array_equal(after["lapse"], before["lapse"] * 0.7)  # the same bits, every value
    assert np.array_equal(after["mortality"], before["mortality"])
    assert derived.package_hash != term_life.package_hash
    assert (derived.config["name"], derived.config["version"]) == (
        term_life.config["name"],
        term_life.config["version"],
    )


def test_a_shifted_two_axis_table_and_the_curve_down_100bp(term_life: Package) -> None:
    overrides = [Override("table", "curve", "shift", -0.01), Override("table", "mortality", "shift", -0.0001)]
    derived = verify_archive(derived_archive(term_life, overrides))
    before, after = assets(term_life)[0], assets(derived)[0]
    assert np.array_equal(after["curve"], before["curve"] - 0.01)
    assert np.array_equal(after["mortality"], before["mortality"] - 0.0001)
    assert after["mortality"].shape == before["mortality"].shape


def test_clamp_caps_a_scaled_table_at_its_declared_max(term_life: Package) -> None:
    with pytest.raises(PackageInvalid) as caught:
        derive(term_life, [Override("table", "mortality", "scale", 1.15)])
    assert "(clamp sets values past a declared min or max to it)" in caught.value.details()
    derived = verify_archive(derived_archive(term_life, [Override("table", "mortality", "scale", 1.15, clamp=True)]))
    before, after = assets(term_life)[0]["mortality"], assets(derived)[0]["mortality"]
    assert np.array_equal(after, np.minimum(before * 1.15, 1.0)) and after.max() == 1.0


def test_parameters_change_in_their_json_file(term_life: Package) -> None:
    overrides = [
        Override("parameter", "expense_acq", "scale", 1.1),
        Override("parameter", "inflation", "shift", 0.005),
        Override("parameter", "dyn_lapse_beta", "value", 3.0),
    ]
    config, files = derive(term_life, overrides)
    assert config == term_life.config  # nothing in the declaration moved
    expenses = json.loads(files["assumptions/expenses.json"])
    assert expenses["acquisition"] == 300.0 * 1.1 and expenses["inflation"] == 0.01 + 0.005
    assert json.loads(files["assumptions/options.json"])["dynamic_lapse"]["beta"] == 3.0
    params = assets(verify_archive(derived_archive(term_life, overrides)))[1]
    assert params["expense_acq"] == 300.0 * 1.1 and params["dyn_lapse_beta"] == 3.0


def test_a_parameter_whose_file_is_missing_gets_one(tmp_path: Path) -> None:
    init_directory(tmp_path / "p")
    (tmp_path / "p" / "assumptions" / "options.json").unlink()  # its parameters fall back to their defaults
    package = build_directory(tmp_path / "p", source_date_epoch=0)[1]
    _, files = derive(package, [Override("parameter", "female_multiplier", "scale", 1.2)])
    assert json.loads(files["assumptions/options.json"]) == {"female_multiplier": 1.2}


def test_a_parameter_with_only_a_default_gets_a_value_in_the_declaration(tmp_path: Path) -> None:
    init_directory(tmp_path / "p")
    config_path = tmp_path / "p" / "livecalc.config.json"
    config = json.loads(config_path.read_text())
    declared = next(p for p in config["interface"]["parameters"] if p["name"] == "female_multiplier")
    del declared["file"], declared["key"]  # default 1.0 alone
    config_path.write_text(json.dumps(config, indent=2))
    package = build_directory(tmp_path / "p", source_date_epoch=0)[1]
    changed, _ = derive(package, [Override("parameter", "female_multiplier", "value", 0.9)])
    after = next(p for p in changed["interface"]["parameters"] if p["name"] == "female_multiplier")
    assert after["value"] == 0.9 and after["default"] == 1.0
    assert (
        assets(verify_archive(derived_archive(package, [Override("parameter", "female_multiplier", "value", 0.9)])))[1][
            "female_multiplier"
        ]
        == 0.9
    )


def test_the_same_changes_give_the_same_archive(term_life: Package) -> None:
    overrides = [Override("table", "lapse", "scale", 0.5), Override("parameter", "expense_maint", "scale", 1.1)]
    assert derived_archive(term_life, overrides) == derived_archive(term_life, overrides)
    other = derived_archive(term_life, [Override("table", "lapse", "scale", 0.6)])
    assert verify_archive(other).package_hash != verify_archive(derived_archive(term_life, overrides)).package_hash


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([Override("table", "nope", "scale", 1.0)], "overrides[0]: no table 'nope' is declared"),
        ([Override("parameter", "nope", "value", 1.0)], "overrides[0]: no parameter 'nope' is declared"),
        ([Override("table", "lapse", "value", 1.0)], "a table takes scale, shift, table_csv, not value"),
        ([Override("parameter", "expense_acq", "table_csv", csv="x")], "a parameter takes scale, shift, value"),
        ([Override("table", "lapse", "scale", float("nan"))], "scale must be a finite number"),
        (
            [Override("table", "lapse", "scale", 0.5), Override("parameter", "expense_acq", "value", -1.0)],
            "overrides[1]: must be ≥ 0 (parameter expense_acq), got -1",
        ),
        ([Override("table", "lapse", "table_csv", csv="year,rate\n0,0.1\n2,0.1\n")], "labels must be consecutive"),
        ([Override("table", "curve", "shift", -2.0)], "values must be finite and > -1"),
    ],
)
def test_what_the_declaration_forbids_is_refused(term_life: Package, overrides: list[Override], message: str) -> None:
    with pytest.raises(PackageInvalid) as caught:
        derive(term_life, overrides)
    assert message in caught.value.details(), caught.value.details()


def test_savings_basis_parameters_and_tables(tmp_path: Path) -> None:
    savings = reference(tmp_path, "savings")
    overrides = [
        Override("parameter", "inv_return_mean", "shift", -0.01),
        Override("table", "surr_charge", "scale", 0.5),
        Override("parameter", "expense_maint", "scale", 1.1),
    ]
    derived = verify_archive(derived_archive(savings, overrides))
    (tables0, params0), (tables1, params1) = assets(savings), assets(derived)
    assert params1["inv_return_mean"] == params0["inv_return_mean"] - 0.01
    assert params1["expense_maint"] == params0["expense_maint"] * 1.1
    assert np.array_equal(tables1["surr_charge"], tables0["surr_charge"] * 0.5)
