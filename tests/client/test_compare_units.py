"""`jobs compare` and the results exports on hand-made results documents (no mesh): each input
difference is warned about by name, statistics line up primary-first with B − A and (B − A)/|A|,
and the exports' suffix rule and table shape."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest

from services.client.compare import compare, comparison_lines
from services.client.exports import check_suffix, scenario_columns, write_results
from services.client.replay import replay_spec
from services.client.results_files import Results, read_results_file
from services.common.errors import InvalidArgument


def output(name: str, mean: float, values: list[float], *, primary: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "primary": primary,
        "statistics": {
            "scenario_count": len(values),
            "mean": mean,
            "std": 1.0,
            "percentiles": [{"level": 99.5, "value": max(values)}],
            "ctes": [{"level": 99.0, "value": min(values)}],
        },
        "values": values,
    }


def document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "job_id": "job-a",
        "result_hash": "a" * 64,
        "package_hash": "1" * 64,
        "dataset_id": "pol",
        "dataset_version": "v1",
        "preview": False,
        "primary_output": "net_cf",
        "outputs": [output("premiums", 0.0, [0.0, 0.0]), output("net_cf", 10.0, [9.0, 11.0], primary=True)],
        "provenance": {
            "package_name": "term-life",
            "package_version": "2.0.0",
            "package_hash": "1" * 64,
            "dataset_id": "pol",
            "dataset_version": "v1",
            "scenarios": {"count": 2, "seed": 7, "mean_reversion": 0.1, "volatility": 0.01, "include_base": True},
        },
    }
    for key, value in changes.items():
        doc[key] = value
    return doc


def test_identical_results_compare_equal_without_warnings() -> None:
    c = compare(Results("A", document()), Results("B", document()))
    assert c.hash_equal and c.warnings == []
    assert [(r.output, r.statistic) for r in c.rows][:2] == [("net_cf", "mean"), ("net_cf", "std")]  # primary first
    assert all(r.difference == 0.0 for r in c.rows)


def test_every_input_difference_is_named() -> None:
    b = document(result_hash="b" * 64, preview=True)
    b["provenance"] = {
        **b["provenance"],
        "package_name": "term-life",
        "package_version": "2.1.0",
        "package_hash": "2" * 64,
        "dataset_version": "v2",
        "scenarios": {"count": 3, "seed": 7, "mean_reversion": 0.2, "volatility": 0.01, "include_base": False},
    }
    b["outputs"] = [*b["outputs"], output("claims", 1.0, [1.0, 1.0])]
    c = compare(Results("A", document()), Results("B", b))
    assert not c.hash_equal
    assert c.warnings == [
        f"packages differ: A term-life 2.0.0 ({'1' * 12}), B term-life 2.1.0 ({'2' * 12})",
        "dataset pol versions differ: A v1, B v2",
        "A is a full run, B a preview",
        "scenarios differ: count 2 vs 3, a 0.1 vs 0.2, include_base true vs false",
        "output claims only in B",
    ]
    claims = {r.statistic: r for r in c.rows if r.output == "claims"}
    assert claims["mean"].a is None and claims["mean"].difference is None
    assert "warning: output claims only in B" in comparison_lines(c)


def test_a_scenario_set_is_compared_by_id_and_version_only() -> None:
    a, b = document(), document()
    a["provenance"]["scenarios"] = {"count": 2, "dataset_id": "rates", "dataset_version": "r1", "seed": 1}
    b["provenance"]["scenarios"] = {"count": 2, "dataset_id": "rates", "dataset_version": "r2", "seed": 9}
    c = compare(Results("A", a), Results("B", b))
    assert c.warnings == ["scenarios differ: scenario set version r1 vs r2"]  # the seed plays no part


def test_relative_differences_at_a_zero_reference() -> None:
    b = copy.deepcopy(document())
    b["outputs"][0] = output("premiums", 5.0, [5.0, 5.0])
    rows = {(r.output, r.statistic): r for r in compare(Results("A", document()), Results("B", b)).rows}
    assert rows[("premiums", "mean")].relative_difference == math.inf
    assert rows[("premiums", "std")].relative_difference == 0.0
    assert rows[("net_cf", "P99.5")].a == 11.0 and rows[("net_cf", "CTE99")].b == 9.0


def test_a_file_without_provenance_warns_that_scenarios_cannot_be_compared() -> None:
    old = {k: v for k, v in document().items() if k != "provenance"}
    c = compare(Results("A", old), Results("B", document()))
    assert c.warnings == ["scenarios cannot be compared: A records no provenance (a file written before it)"]
    with pytest.raises(InvalidArgument, match="records neither the job's spec nor its provenance"):
        replay_spec(Results("A", old))


def test_replay_spec_from_provenance_alone() -> None:
    spec = replay_spec(Results("A", document()))
    assert (spec.package_hash, spec.dataset_id, spec.scenarios.seed, spec.scenarios.count) == ("1" * 64, "pol", 7, 2)
    assert not spec.HasField("preview")


def test_exports_suffixes_and_table(tmp_path: Path) -> None:
    for name in ("r.JSON", "r.csv", "r.parquet"):
        assert check_suffix(tmp_path / name).name == name
    for name in ("r.xlsx", "results"):
        with pytest.raises(InvalidArgument, match=r"\.json .*\.csv or \.parquet"):
            check_suffix(tmp_path / name)
    assert scenario_columns(document()) == {"scenario": [0, 1], "premiums": [0.0, 0.0], "net_cf": [9.0, 11.0]}
    broken = document()
    broken["outputs"][0]["values"] = [1.0]
    with pytest.raises(InvalidArgument, match="output premiums has 1 values, others 2"):
        scenario_columns(broken)
    write_results(tmp_path / "r.json", document())
    assert read_results_file(tmp_path / "r.json").document["provenance"]["scenarios"]["seed"] == 7


def test_files_that_are_not_results_are_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidArgument, match="is not a results file: not JSON"):
        read_results_file(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InvalidArgument, match="a JSON list, not an object"):
        read_results_file(tmp_path / "list.json")
    with pytest.raises(InvalidArgument, match="cannot read"):
        read_results_file(tmp_path / "missing.json")
