"""`livecalc submit --variant …` and `--variants FILE.json`: sensitivities in one job, and their table.

A variant is a name and changes to the package's declared tables and float64 parameters
(gateway job.proto `Variant`); the job values the base and every variant with the same dataset
version and scenarios. On the command line, one `--variant` per variant (repeatable):

    --variant 'NAME: CHANGE[, CHANGE…]'

    CHANGE   table.T*F     every value of table T multiplied by F      table.mortality*1.15
             table.T+S     S added to every value (or T-S)             table.curve-100bp
             table.T=@CSV  table T replaced by the CSV file CSV        table.lapse=@lapse_low.csv
             param.P*F     float64 parameter P multiplied by F         param.expense_acq*1.1
             param.P+S     S added to P (or P-S)                       param.inflation+0.5%
             param.P=V     P set to V                                  param.dyn_lapse_beta=0

An amount added or set may end in ``bp`` (× 0.0001) or ``%`` (× 0.01), converted exactly. A
scale or shift may end in ``clamped``: values it takes past the declaration's min or max are set
to it (``table.mortality*1.15 clamped`` caps every rate at 1) instead of refused.
`--variants FILE.json` reads a list of variants in the proto's JSON form
(``[{"name": "mort_up", "overrides": [{"table": "mortality", "scale": 1.15}]}]``, or an object
with that list under ``"variants"``). The result table (`variant_lines`) shows each variant's
mean of the primary output, its change and relative change against the base, and its result
hash; the results JSON holds them under ``variants`` (`report.variant_document`).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from google.protobuf import json_format

from livecalc.gateway.v1 import job_pb2
from services.client.report import money, primary_output
from services.common.client import table
from services.common.errors import InvalidArgument

VARIANT_HELP: Final = (
    "a sensitivity valued in the same job: 'NAME: CHANGE[, CHANGE…]', CHANGE one of table.T*F, table.T+S, "
    "table.T-S, table.T=@FILE.csv, param.P*F, param.P+S, param.P-S, param.P=V (S and V may end in bp or %%; "
    "a scale or shift may end in 'clamped': values past a declared min or max are set to it), e.g. "
    "'mort_up: table.mortality*1.15 clamped' or 'rates_down: table.curve-100bp' (repeatable)"
)
_CHANGE: Final = re.compile(r"\s*(table|param)\.([A-Za-z_][A-Za-z0-9_]*)\s*([*+=-])\s*(\S.*?)(\s+clamped)?\s*")
_UNITS: Final = {"bp": Decimal("0.0001"), "%": Decimal("0.01")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`submit`'s variant flags."""
    p.add_argument("--variant", action="append", metavar="'NAME: CHANGE, …'", help=VARIANT_HELP)
    p.add_argument(
        "--variants",
        metavar="FILE.json",
        help="variants from a JSON file: a list of {name, overrides: [{table|parameter, scale|shift|value|"
        "table_csv}]} (job.proto Variant), or an object with that list under 'variants'",
    )


def _amount(text: str, *, units: bool, where: str) -> float:
    """A number; with ``units`` it may end in bp or % (exact decimal scaling, then rounded once)."""
    scale = Decimal(1)
    for suffix, factor in _UNITS.items():
        if units and text.endswith(suffix):
            text, scale = text[: -len(suffix)].strip(), factor
            break
    try:
        value = float(Decimal(text) * scale)
    except InvalidOperation:
        raise InvalidArgument(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidArgument(f"{where}: {text!r} is not a finite number")
    return value


def parse_change(text: str, *, where: str) -> job_pb2.Override:
    """One CHANGE of a --variant (see the module docstring)."""
    match = _CHANGE.fullmatch(text)
    if match is None:
        raise InvalidArgument(
            f"{where}: {text.strip()!r} is not a change: table.NAME*F, table.NAME+S, table.NAME-S, "
            "table.NAME=@FILE.csv, param.NAME*F, param.NAME+S, param.NAME-S or param.NAME=V"
        )
    target, name, op, amount, clamped = match.groups()
    override = job_pb2.Override(table=name) if target == "table" else job_pb2.Override(parameter=name)
    if op == "*":
        override.scale = _amount(amount, units=False, where=where)
    elif op in "+-":
        shift = _amount(amount, units=True, where=where)
        override.shift = -shift if op == "-" else shift
    elif target == "table":
        if not amount.startswith("@"):
            raise InvalidArgument(f"{where}: a table is replaced by a CSV file: table.{name}=@FILE.csv")
        path = Path(amount[1:])
        try:
            override.table_csv = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidArgument(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    else:
        override.value = _amount(amount, units=True, where=where)
    if clamped:
        if op not in "*+-":
            raise InvalidArgument(f"{where}: 'clamped' goes with a scale (*) or a shift (+, -)")
        override.clamp = True
    return override


def parse_variant(text: str) -> job_pb2.Variant:
    """One --variant: 'NAME: CHANGE, CHANGE…'."""
    name, sep, changes = text.partition(":")
    name = name.strip()
    if not sep or not name:
        raise InvalidArgument(f"--variant {text!r}: write it as 'NAME: CHANGE[, CHANGE…]'")
    where = f"--variant {name}"
    parts = [c for c in changes.split(",") if c.strip()]
    if not parts:
        raise InvalidArgument(f"{where}: no change given")
    return job_pb2.Variant(name=name, overrides=[parse_change(c, where=where) for c in parts])


def read_variants(path: Path) -> list[job_pb2.Variant]:
    """--variants FILE.json: the proto JSON of a list of variants (or {"variants": [...]})."""
    try:
        doc: Any = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidArgument(f"--variants {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"--variants {path}: not JSON: {exc}") from None
    if isinstance(doc, dict) and "variants" in doc:
        doc = doc["variants"]
    if not isinstance(doc, list):
        raise InvalidArgument(f"--variants {path}: expected a list of variants")
    out = []
    for i, item in enumerate(doc):
        try:
            out.append(json_format.ParseDict(item, job_pb2.Variant()))
        except json_format.ParseError as exc:
            raise InvalidArgument(f"--variants {path}: variant {i}: {exc}") from None
    return out


def variants_of(args: argparse.Namespace) -> list[job_pb2.Variant]:
    """The variants `submit` was given: --variants FILE's, then each --variant, in order (the
    gateway checks names, targets and values against the package)."""
    out = read_variants(Path(args.variants)) if getattr(args, "variants", None) else []
    out += [parse_variant(text) for text in getattr(args, "variant", None) or []]
    return out


def _relative(value: float) -> str:
    return f"{value:+.2%}".replace("%", " %") if math.isfinite(value) else ("+inf" if value > 0 else "-inf")


def variant_lines(result: job_pb2.JobResult) -> list[str]:
    """The variants' table (none without variants): mean, change and relative change of the
    primary output against the base, and each variant's result hash."""
    if not result.variants:
        return []
    primary = primary_output(result).name
    rows = [["variant", f"mean {primary}", "change", "relative", "result hash"]]
    rows.append(["(base)", money(result.statistics.mean), "", "", result.result_hash])
    rows += [
        [v.name, money(v.statistics.mean), f"{v.mean_change:+,.0f}", _relative(v.relative_change), v.result_hash]
        for v in result.variants
    ]
    return ["", f"Sensitivities ({len(result.variants)}) against the base", *table(rows).splitlines()]
