"""Pipeline configs: topological order and clear errors for malformed graphs."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.errors import InvalidArgument
from services.engine.errors import PipelineError
from services.engine.pipeline import plan
from services.valuation.packages.config import REFERENCE_PIPELINE


def node(node_id: str, inputs: list[str], outputs: list[str], engine: str = "python://esg") -> dict[str, Any]:
    return {"id": node_id, "engine": engine, "inputs": inputs, "outputs": outputs}


def test_reference_pipeline_order() -> None:
    assert [n.id for n in plan(REFERENCE_PIPELINE)] == ["esg", "term_life"]


def test_topological_order_from_any_config_order() -> None:
    nodes = [
        node("c", ["bus://b"], ["bus://c"]),
        node("b", ["bus://a", "$policies"], ["bus://b"]),
        node("a", ["$scenarios"], ["bus://a"]),
        node("d", ["bus://a", "bus://c"], ["bus://d"]),
    ]
    assert [n.id for n in plan(nodes)] == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("nodes", "words"),
    [
        ([node("a", ["bus://b"], ["bus://a"]), node("b", ["bus://a"], ["bus://b"])], "cycle through nodes a, b"),
        ([node("a", ["bus://nope"], ["bus://a"])], r"inputs\[0\]: bus://nope is not written by any node"),
        ([node("a", ["$weather"], ["bus://a"])], r"'\$weather': use \$policies"),
        ([node("a", [], ["bus://a"]), node("a", [], ["bus://b"])], "duplicate node id 'a'"),
        ([node("a", [], ["bus://x"]), node("b", [], ["bus://x"])], "bus://x is also written by node 'a'"),
        ([node("a", [], ["bus://a"], engine="docker://x")], "required: wasm://name or python://name"),
        ([node("a", [], ["out.csv"])], "must be a bus://name buffer"),
        ([node("a", [], [])], "required: at least one output"),
        ([{"engine": "python://esg", "outputs": ["bus://a"]}], r"\.id: required: a non-empty string"),
        ([], "must be a non-empty list of nodes"),
    ],
    ids=["cycle", "unknown-bus", "unknown-special", "dup-id", "dup-output", "engine", "output", "no-output", "id",
         "empty"],
)  # fmt: skip
def test_bad_pipelines(nodes: list[dict[str, Any]], words: str) -> None:
    with pytest.raises(PipelineError, match=words) as info:
        plan(nodes)
    assert isinstance(info.value, InvalidArgument)
