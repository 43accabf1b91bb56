"""``livecalc.config.json``: the schema and the seed's rules, plus the pipeline graph.

Every violation is collected, each with its JSON path, so an author fixes them all in one
round. Checks that need the package's files (WASM binaries, assumption tables) live in
`wasm_checks` and `package`; this module sees only the config and the set of file paths.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from services.valuation.interface.declaration import ModelInterface
from services.valuation.interface.parser import parse_interface
from services.valuation.packages.report import Issue, error, warning
from services.valuation.scenarios import U64_MAX

PYTHON_BUILTINS: Final = ("esg", "normals", "savings", "term_life")
"""``python://`` nodes the engine ships (numpy reference implementations); nothing else runs."""
SPECIAL_INPUTS: Final = ("$policies", "$assumptions", "$scenarios")
BUS: Final = "bus://"
AM: Final = "am://"
TOP_LEVEL: Final = ("name", "version", "model", "interface", "assumptions", "scenarios", "pipeline", "description")
MAX_SCENARIOS: Final = 1_000_000

REFERENCE_PIPELINE: Final = (
    {"id": "esg", "engine": "wasm://esg", "inputs": ["$scenarios"], "outputs": ["bus://rates"]},
    {
        "id": "term_life",
        "engine": "wasm://term_life",
        "inputs": ["$policies", "$assumptions", "bus://rates"],
        "outputs": ["bus://pv"],
    },
)
"""The pipeline a config without ``pipeline`` gets: esg → term_life on the WASM host."""

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ENGINE: Final = re.compile(r"(wasm|python)://([a-z0-9_][a-z0-9_-]{0,63})")


@dataclass(frozen=True)
class Node:
    """A pipeline node whose fields have the right types (its references may still be wrong)."""

    id: str
    engine: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def scheme(self) -> str:
        return self.engine.split("://", 1)[0]

    @property
    def model(self) -> str:
        return self.engine.split("://", 1)[1]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "engine": self.engine, "inputs": list(self.inputs), "outputs": list(self.outputs)}


def pipeline_of(config: Mapping[str, Any]) -> list[Node]:
    """The config's pipeline nodes as declared (the reference pipeline when absent).

    Call it on a config `validate_config` accepted; malformed nodes are skipped here.
    """
    raw = config.get("pipeline", list(REFERENCE_PIPELINE))
    nodes, _ = _nodes(raw if isinstance(raw, list) else [])
    return nodes


def wasm_models(config: Mapping[str, Any]) -> list[str]:
    """Names of the ``wasm://`` models the pipeline runs, in first-use order."""
    return list(dict.fromkeys(n.model for n in pipeline_of(config) if n.scheme == "wasm"))


def validate_config(config: Any, paths: Collection[str]) -> list[Issue]:
    """Every violation of the schema and the seed's rules; ``paths`` are the package's files."""
    if not isinstance(config, dict):
        return [error("$", "the config must be a JSON object")]
    issues: list[Issue] = []
    for key in config:
        if key not in TOP_LEVEL:
            issues.append(warning(f"$.{key}", "unknown key (ignored)"))
    for key in ("name", "version"):
        value = config.get(key)
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            issues.append(error(f"$.{key}", f"required: 1-64 letters, digits, '.', '_' or '-', got {value!r}"))
    model = config.get("model")
    if not isinstance(model, str) or not _NAME.fullmatch(model):
        issues.append(error("$.model", f"required: the model's name (1-64 letters, digits, . _ -), got {model!r}"))
    if "interface" not in config:
        issues.append(error("$.interface", "required: the model's declared interface (docs/model-interface.md)"))
        interface = None
    else:
        interface, found = parse_interface(config["interface"])
        issues += found
    if "assumptions" in config:
        issues.append(warning("$.assumptions", "not read: tables and parameters are declared in $.interface"))
    issues += _scenarios(config.get("scenarios"))
    if "pipeline" in config:
        issues += pipeline_issues(config["pipeline"])
    if interface is not None and not any(i.where.startswith("$.pipeline") for i in issues):
        issues += _scenario_wiring(pipeline_of(config), interface)
    return issues


def _scenario_wiring(nodes: Sequence[Node], interface: ModelInterface) -> list[Issue]:
    """A projection node (one reading ``$policies``) reads exactly the declared scenario inputs."""
    declared = sorted(s.name for s in interface.scenario_inputs)
    issues = []
    for i, node in enumerate(nodes):
        if "$policies" not in node.inputs:
            continue
        read = sorted(b.removeprefix(BUS) for b in node.inputs if b.startswith(BUS))
        if read != declared:
            issues.append(error(
                f"$.pipeline[{i}].inputs",
                f"reads {', '.join(BUS + r for r in read) or 'no bus buffer'}; the interface declares the "
                f"scenario inputs {', '.join(declared) or '(none)'}: name each as bus://NAME",
            ))  # fmt: skip
    return issues


def _scenarios(raw: Any) -> list[Issue]:
    if not isinstance(raw, dict):
        return [error("$.scenarios", "required: an object with count > 0")]
    issues: list[Issue] = []
    count: Any = raw.get("count")
    if not _is_int(count) or not 0 < count <= MAX_SCENARIOS:
        issues.append(error("$.scenarios.count", f"required: an integer in 1..{MAX_SCENARIOS}, got {count!r}"))
    seed: Any = raw.get("seed", 0)
    if not _is_int(seed) or not 0 <= seed <= U64_MAX:
        issues.append(error("$.scenarios.seed", f"must be an integer in 0..2^64−1, got {seed!r}"))
    for key, low, strict in (("a", 0.0, True), ("sigma", 0.0, False)):
        value = raw.get(key, 1.0)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (value <= low if strict else value < low):
            issues.append(error(f"$.scenarios.{key}", f"must be a finite number {'>' if strict else '≥'} 0"))
    if not isinstance(raw.get("include_base", True), bool):
        issues.append(error("$.scenarios.include_base", "must be true or false"))
    for key in raw:
        if key not in ("count", "seed", "a", "sigma", "include_base"):
            issues.append(warning(f"$.scenarios.{key}", "unknown key (ignored)"))
    return issues


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _nodes(raw: list[Any]) -> tuple[list[Node], list[Issue]]:
    nodes: list[Node] = []
    issues: list[Issue] = []
    for i, item in enumerate(raw):
        at = f"$.pipeline[{i}]"
        if not isinstance(item, dict):
            issues.append(error(at, "must be an object"))
            continue
        bad = len(issues)
        node_id, engine = item.get("id"), item.get("engine")
        if not isinstance(node_id, str) or not node_id:
            issues.append(error(f"{at}.id", "required: a non-empty string"))
        match = _ENGINE.fullmatch(engine) if isinstance(engine, str) else None
        if match is None:
            issues.append(error(f"{at}.engine", f"required: wasm://name or python://name, got {engine!r}"))
        elif match[1] == "python" and match[2] not in PYTHON_BUILTINS:
            issues.append(
                error(f"{at}.engine", f"{engine} is not a built-in (python:// nodes: {', '.join(PYTHON_BUILTINS)})")
            )
        lists: dict[str, tuple[str, ...]] = {}
        for key in ("inputs", "outputs"):
            value = item.get(key, [] if key == "inputs" else None)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                issues.append(error(f"{at}.{key}", "required: a list of strings" if key == "outputs" else "a list"))
                continue
            lists[key] = tuple(value)
        for j, inp in enumerate(lists.get("inputs", ())):
            if inp not in SPECIAL_INPUTS and not (inp.startswith(BUS) and len(inp) > len(BUS)):
                issues.append(
                    error(f"{at}.inputs[{j}]", f"{inp!r}: use $policies, $assumptions, $scenarios or bus://name")
                )
        outputs = lists.get("outputs")
        if outputs is not None and not outputs:
            issues.append(error(f"{at}.outputs", "required: at least one output"))
        for j, out in enumerate(outputs or ()):
            if not out.startswith(BUS) or len(out) == len(BUS):
                issues.append(error(f"{at}.outputs[{j}]", f"{out!r} must be a bus://name buffer"))
        if len(issues) == bad:
            assert isinstance(node_id, str) and isinstance(engine, str)
            nodes.append(Node(node_id, engine, lists["inputs"], lists["outputs"]))
    return nodes, issues


def pipeline_issues(raw: Any) -> list[Issue]:
    """Every problem of a config's ``pipeline`` list: node fields, unique ids, one writer per bus
    buffer, every bus input written by some node, no cycle."""
    if not isinstance(raw, list) or not raw:
        return [error("$.pipeline", "must be a non-empty list of nodes")]
    nodes, issues = _nodes(raw)
    index = {id(n): i for i, n in enumerate(nodes)}
    position = {}
    for i, item in enumerate(raw):
        if isinstance(item, dict):
            position[item.get("id")] = i
    seen: dict[str, int] = {}
    producer: dict[str, str] = {}
    for i, item in enumerate(raw):
        node_id = item.get("id") if isinstance(item, dict) else None
        if isinstance(node_id, str) and node_id:
            if node_id in seen:
                issues.append(
                    error(f"$.pipeline[{i}].id", f"duplicate node id {node_id!r} (also $.pipeline[{seen[node_id]}])")
                )
            else:
                seen[node_id] = i
    for node in nodes:
        at = f"$.pipeline[{position.get(node.id, index[id(node)])}]"
        for j, out in enumerate(node.outputs):
            if out in producer and producer[out] != node.id:
                issues.append(error(f"{at}.outputs[{j}]", f"{out} is also written by node {producer[out]!r}"))
            producer.setdefault(out, node.id)
    for node in nodes:
        at = f"$.pipeline[{position.get(node.id, index[id(node)])}]"
        for j, inp in enumerate(node.inputs):
            if inp.startswith(BUS) and inp not in producer:
                issues.append(error(f"{at}.inputs[{j}]", f"{inp} is not written by any node"))
    # Kahn's algorithm over bus edges; whatever never becomes ready sits on a cycle
    # (a node with an unresolved input is already reported: count it as done, not as a cycle)
    resolved = [n for n in nodes if all(i in producer for i in n.inputs if i.startswith(BUS))]
    done: set[str] = {n.id for n in nodes} - {n.id for n in resolved}
    remaining = resolved
    progress = True
    while remaining and progress:
        ready = [n for n in remaining if all(producer[i] in done for i in n.inputs if i.startswith(BUS))]
        done.update(n.id for n in ready)
        progress = bool(ready)
        remaining = [n for n in remaining if n.id not in done]
    if remaining:
        ids = ", ".join(n.id for n in remaining)
        issues.append(error("$.pipeline", f"the graph has a cycle through nodes {ids}"))
    return issues


def topological_order(nodes: Sequence[Node]) -> list[Node]:
    """The nodes in an order where every node runs after the writers of its bus inputs (ties keep
    the given order). Call it on nodes `pipeline_issues` accepted."""
    producer = {out: n.id for n in nodes for out in n.outputs}
    ordered: list[Node] = []
    done: set[str] = set()
    remaining = list(nodes)
    while remaining:
        ready = [n for n in remaining if all(producer[i] in done for i in n.inputs if i.startswith(BUS))]
        if not ready:
            raise ValueError("topological_order needs an acyclic pipeline (check pipeline_issues first)")
        ordered += ready
        done.update(n.id for n in ready)
        remaining = [n for n in remaining if n.id not in done]
    return ordered
