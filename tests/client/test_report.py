"""The results table, the results JSON and the plot name the outputs the model declares: a
package of three outputs (the primary in the middle) is shown with its own names, never term
life's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from services.client.report import json_text, plot_title, result_document, result_lines, write_plot
from services.gateway.results import final_result
from services.valuation.interface.declaration import Outputs
from services.valuation.statistics import result_hash
from tests.client.clitools import png_size

OUTPUTS = Outputs(("reserve", "profit", "tax"), 1)


def _result() -> tuple[np.ndarray, object]:
    values = np.random.default_rng(3).normal(100.0, 10.0, size=(3, 40))
    result = final_result(
        values, OUTPUTS, policy_count=9, dataset_version="v1", package_hash="ab" * 32, steps=10, elapsed_seconds=2.0
    )
    return values, result


def test_the_results_json_carries_every_declared_output() -> None:
    values, result = _result()
    doc = json.loads(json_text(result_document(result, job_id="j", dataset_id="d")))  # type: ignore[arg-type]
    assert doc["primary_output"] == "profit" and doc["result_hash"] == result_hash(values[1])
    assert doc["statistics"]["mean"] == values[1].mean()
    assert doc["statistics"]["output_means"] == {name: values[k].mean() for k, name in enumerate(OUTPUTS.names)}
    assert [(o["name"], o["primary"]) for o in doc["outputs"]] == [("reserve", False), ("profit", True), ("tax", False)]
    for k, o in enumerate(doc["outputs"]):
        assert o["values"] == values[k].tolist() and o["statistics"]["mean"] == values[k].mean()
        assert o["statistics"]["std"] == np.std(values[k], ddof=1) and "output_means" not in o["statistics"]
    assert "pv_net_cf" not in json.dumps(doc)


def test_the_table_and_the_plot_show_the_models_output_names(tmp_path: Path) -> None:
    _, result = _result()
    text = "\n".join(result_lines(result))  # type: ignore[arg-type]
    assert "mean profit" in text and "mean reserve" in text and "mean tax" in text
    assert "net_cf" not in text and "premiums" not in text
    assert plot_title(result, "pkg", "d").startswith("profit by scenario")  # type: ignore[arg-type]
    png = tmp_path / "plot.png"
    write_plot(result, png, title="t")  # type: ignore[arg-type]
    assert png_size(png) == (1200, 700)
