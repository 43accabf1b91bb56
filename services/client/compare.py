"""Two results side by side: every output's statistics, their differences, and what differs in
their inputs.

`compare(a, b)` lines up the outputs by name (A's primary output first, then A's others in
declared order, then B's own), and for each the
statistics of the results document (mean, std, standard error, min, max, each percentile and
CTE) as A, B, B − A and (B − A)/|A| (services.valuation.statistics.relative_difference: ±inf or
0 at A = 0). It says whether the result hashes are equal, and warns, naming what differs, when
the two were not computed on the same inputs: packages (name, version, hash), dataset ids or
versions, scenarios (each differing parameter: seed, a, σ, include_base, count; or the scenario
set and its version), preview or not, or outputs only one of them has. A difference in
results is only a sensitivity when the warnings are the ones intended.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from livecalc.engine.v1 import engine_pb2
from services.client.report import money
from services.client.results_files import Results
from services.valuation.statistics import relative_difference

#: The plain statistics of a results document, in the order they are shown.
PLAIN_STATISTICS: Final = ("mean", "std", "standard_error", "min", "max")
#: Scenario parameters compared, with the names a warning uses.
SCENARIO_FIELDS: Final = (
    ("count", "count"),
    ("seed", "seed"),
    ("mean_reversion", "a"),
    ("volatility", "σ"),
    ("include_base", "include_base"),
    ("dataset_id", "scenario set"),
    ("dataset_version", "scenario set version"),
)


@dataclass(frozen=True)
class StatisticRow:
    """One statistic of one output in both results (None where a result lacks it)."""

    output: str
    statistic: str
    a: float | None
    b: float | None

    @property
    def difference(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def relative_difference(self) -> float | None:
        return None if self.a is None or self.b is None else relative_difference(self.b, self.a)


@dataclass(frozen=True)
class Comparison:
    a: Results
    b: Results
    rows: list[StatisticRow]
    warnings: list[str] = field(default_factory=list)

    @property
    def hash_equal(self) -> bool:
        return self.a.result_hash == self.b.result_hash

    def document(self) -> dict[str, Any]:
        """The comparison as JSON (`jobs compare --json`, `--out f.json`)."""
        return {
            "a": _side(self.a),
            "b": _side(self.b),
            "hash_equal": self.hash_equal,
            "warnings": self.warnings,
            "statistics": [
                {
                    "output": r.output,
                    "statistic": r.statistic,
                    "a": r.a,
                    "b": r.b,
                    "difference": r.difference,
                    "relative_difference": r.relative_difference,
                }
                for r in self.rows
            ],
        }

    def columns(self) -> dict[str, list[Any]]:
        """The rows as a table (`--out f.csv|.parquet`): one row per output and statistic."""
        return {
            "output": [r.output for r in self.rows],
            "statistic": [r.statistic for r in self.rows],
            "a": [r.a for r in self.rows],
            "b": [r.b for r in self.rows],
            "difference": [r.difference for r in self.rows],
            "relative_difference": [r.relative_difference for r in self.rows],
        }

    def metadata(self) -> dict[str, Any]:
        """What a Parquet file of the rows carries in its schema besides them."""
        doc = self.document()
        return {"a": doc["a"], "b": doc["b"], "hash_equal": doc["hash_equal"], "warnings": doc["warnings"]}


def _side(r: Results) -> dict[str, Any]:
    d = r.document
    return {
        "source": r.source,
        "job_id": r.job_id,
        "result_hash": r.result_hash,
        "package_hash": d.get("package_hash"),
        "dataset_id": d.get("dataset_id"),
        "dataset_version": d.get("dataset_version"),
        "provenance": d.get("provenance"),
    }


def statistics_of(document: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """(name, value) of a results document's statistics of one output: the plain ones, then
    ``P<level>`` for each percentile and ``CTE<level>`` for each CTE."""
    for name in PLAIN_STATISTICS:
        if isinstance(document.get(name), int | float):
            yield name, float(document[name])
    for p in document.get("percentiles") or []:
        yield f"P{p['level']:g}", float(p["value"])
    for c in document.get("ctes") or []:
        yield f"CTE{c['level']:g}", float(c["value"])


def _rows(a: Results, b: Results) -> tuple[list[StatisticRow], list[str]]:
    stats_a = {str(o["name"]): dict(statistics_of(o.get("statistics") or {})) for o in a.outputs}
    stats_b = {str(o["name"]): dict(statistics_of(o.get("statistics") or {})) for o in b.outputs}
    names = list(stats_a) + [n for n in stats_b if n not in stats_a]
    primary = a.document.get("primary_output")
    names.sort(key=lambda n: n != primary)  # the primary output first, the others in declared order
    rows, warnings = [], []
    for name in names:
        if name not in stats_a or name not in stats_b:
            warnings.append(f"output {name} only in {'A' if name in stats_a else 'B'}")
        sa, sb = stats_a.get(name, {}), stats_b.get(name, {})
        keys = list(sa) + [k for k in sb if k not in sa]
        rows += [StatisticRow(name, k, sa.get(k), sb.get(k)) for k in keys]
    return rows, warnings


def _identity(r: Results) -> dict[str, str]:
    """Package, dataset and preview identity of a result (from its provenance, else the document)."""
    d, p = r.document, r.provenance
    out = {
        "package": str(d.get("package_hash") or ""),
        "dataset": str(d.get("dataset_id") or ""),
        "dataset version": str(d.get("dataset_version") or ""),
        "preview": "preview" if d.get("preview") else "full run",
    }
    if p is not None:
        out["package"] = p.package_hash or out["package"]
        out["dataset"] = p.dataset_id or out["dataset"]
        out["dataset version"] = p.dataset_version or out["dataset version"]
    return out


def _package_name(r: Results) -> str:
    p = r.provenance
    if p is None or not p.package_name:
        return str(r.document.get("package_hash") or "")
    return f"{p.package_name} {p.package_version} ({p.package_hash[:12]})"


def _scenarios(r: Results) -> engine_pb2.ScenarioSpec | None:
    """The resolved scenarios of a result: its provenance's, else its recorded spec's."""
    if (p := r.provenance) is not None and p.HasField("scenarios"):
        return p.scenarios
    spec = r.spec
    return spec.scenarios if spec is not None and spec.HasField("scenarios") else None


def _scenario_value(s: engine_pb2.ScenarioSpec, name: str) -> str:
    if name in ("seed", "mean_reversion", "volatility", "include_base") and s.dataset_id:
        return ""  # a scenario set's scenarios are data: the generator's parameters play no part
    value = getattr(s, name)
    return str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else str(value)


def input_warnings(a: Results, b: Results) -> list[str]:
    """What differs between the inputs of two results, each named."""
    out = []
    ia, ib = _identity(a), _identity(b)
    if ia["package"] != ib["package"]:
        out.append(f"packages differ: A {_package_name(a)}, B {_package_name(b)}")
    if ia["dataset"] != ib["dataset"]:
        out.append(f"datasets differ: A {ia['dataset']}, B {ib['dataset']}")
    elif ia["dataset version"] != ib["dataset version"]:
        out.append(f"dataset {ia['dataset']} versions differ: A {ia['dataset version']}, B {ib['dataset version']}")
    if ia["preview"] != ib["preview"]:
        out.append(f"A is a {ia['preview']}, B a {ib['preview']}")
    sa, sb = _scenarios(a), _scenarios(b)
    if sa is None or sb is None:
        missing = " and ".join(x for x, s in (("A", sa), ("B", sb)) if s is None)
        out.append(f"scenarios cannot be compared: {missing} records no provenance (a file written before it)")
    else:
        differing = [
            f"{label} {_scenario_value(sa, name) or '-'} vs {_scenario_value(sb, name) or '-'}"
            for name, label in SCENARIO_FIELDS
            if _scenario_value(sa, name) != _scenario_value(sb, name)
        ]
        if differing:
            out.append("scenarios differ: " + ", ".join(differing))
    pa, pb = a.provenance, b.provenance
    if (
        pa is not None
        and pb is not None
        and pa.preview != pb.preview
        and pa.HasField("preview")
        and pb.HasField("preview")
    ):
        out.append(
            f"preview samples differ: A {pa.preview.sample_rows:,} (seed {pa.preview.seed}), "
            f"B {pb.preview.sample_rows:,} (seed {pb.preview.seed})"
        )
    return out


def compare(a: Results, b: Results) -> Comparison:
    rows, output_warnings = _rows(a, b)
    return Comparison(a, b, rows, input_warnings(a, b) + output_warnings)


def comparison_lines(c: Comparison) -> list[str]:
    """The comparison as a text table, its hash verdict and warnings."""

    def number(v: float | None) -> str:
        return "-" if v is None else money(v)

    def percent(v: float | None) -> str:
        return "-" if v is None else f"{100.0 * v:+.3f} %"

    header = ("OUTPUT", "STATISTIC", "A", "B", "B − A", "(B − A)/|A|")
    table = [header] + [
        (r.output, r.statistic, number(r.a), number(r.b), number(r.difference), percent(r.relative_difference))
        for r in c.rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        f"A  {c.a.source}: hash {c.a.result_hash}",
        f"B  {c.b.source}: hash {c.b.result_hash}",
        f"result hashes {'equal' if c.hash_equal else 'differ'}",
        *(f"warning: {w}" for w in c.warnings),
        "",
    ]
    for row in table:
        left = "  ".join(row[i].ljust(widths[i]) for i in range(2))
        right = "  ".join(row[i].rjust(widths[i]) for i in range(2, len(header)))
        lines.append(f"{left}  {right}")
    return lines
