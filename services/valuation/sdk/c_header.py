"""``model_interface.h``: a declared model interface as named, typed C accessors (ABI v2).

The generic header ``livecalc_model.h`` knows the context (`lc_ctx`) and its descriptors
(`lc_array`), not what they hold; the declaration says that, in order. `render_header` writes
one accessor per declared thing, so a model reads ``col_age_at_entry(LC_BASE c)[i]``,
``table_mortality(LC_BASE c)``, ``param_expense_acq(LC_BASE c)``, ``scen_rates(LC_BASE c)`` and
writes ``partials[... OUT_NET_CF ...]`` without an offset or an index written by hand:

- a column: ``COL_NAME`` (its index) and ``col_NAME(c)`` (``const int32_t *`` for int32 and
  category, ``const int64_t *``, ``const double *``); a category's codes as ``NAME_VALUE``;
- a table: ``TABLE_NAME``, ``AXIS_NAME_AXIS`` (axis indices), ``table_NAME(c)`` (``const double *``,
  row-major), ``table_NAME_origin(c, axis)`` (first label) and ``table_NAME_size(c, axis)``; the
  origins and undeclared sizes come from the run's descriptors, so they are functions;
- a parameter: ``PARAM_NAME`` and ``param_NAME(c)`` (``double``, ``int64_t`` or ``uint64_t``);
- a scenario input: ``SCEN_NAME``, ``scen_NAME(c)`` (``const double *``, [n_scen][stride]) and
  ``scen_NAME_stride(c)``;
- an output: ``OUT_NAME`` (its index k in ``partials[b][k][s]``), ``LC_N_OUTPUTS`` and
  ``LC_PRIMARY_OUTPUT``; an output declared ``monthly``: ``MONTHLY_NAME`` (its index m in
  ``cash_flows[b][m][s][t]``) and ``LC_N_MONTHLY``;
- the export ``lc_features()``, weak, returning ``LC_FEATURES`` (0 unless the model defines it
  before including the header): what ``lc_run_blocks`` writes besides the partials;
- ``interface_check(c)``: LC_OK when a context is of ABI v2 and lays out this declaration
  (counts, types, dimensions, declared sizes), else LC_E_ABI;
- ``LC_INTERFACE_DIGEST`` (`services.valuation.sdk.digest`) and the export
  ``lc_interface_digest()`` that returns it, defined weak so that a model of several C files
  links it once: the package validator reads it from the binary to tell a build for another
  declaration.

The output depends on the declaration alone (same declaration, same bytes), so a build can
compare a committed header with a fresh rendering. ``python -m services.valuation.sdk.c_header
DECLARATION.json --out model_interface.h [--check]`` renders one from a JSON file (a config
with key ``interface``, or the interface object itself).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from services.valuation.sdk.digest import DIGEST_EXPORT, FEATURES_EXPORT, digest_text, interface_digest

if TYPE_CHECKING:
    from services.valuation.interface.declaration import ModelInterface

HEADER_NAME: Final = "model_interface.h"

_IDENTIFIER: Final = re.compile(r"[a-z][a-z0-9_]*")

_COLUMN_C: Final = {
    "int32": ("int32_t", "lc_i32", "LC_INT32"),
    "int64": ("int64_t", "lc_i64", "LC_INT64"),
    "float64": ("double", "lc_f64", "LC_FLOAT64"),
    "category": ("int32_t", "lc_i32", "LC_CATEGORY"),
}
"""Column type → (C element type, array accessor of livecalc_model.h, lc_array.type macro)."""

_PARAMETER_C: Final = {
    "float64": ("double", "lc_param_f64"),
    "int64": ("int64_t", "lc_param_i64"),
    "uint64": ("uint64_t", "lc_param_u64"),
}


class ColumnDecl(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def values(self) -> Sequence[str]: ...


class AxisDecl(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int | None: ...


class TableDecl(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def axes(self) -> Sequence[AxisDecl]: ...


class ParameterDecl(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...


class NamedDecl(Protocol):
    @property
    def name(self) -> str: ...


class OutputDecl(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def primary(self) -> bool: ...
    @property
    def monthly(self) -> bool: ...


class InterfaceDecl(Protocol):
    """What the header needs of a declaration (`services.valuation.interface.declaration.ModelInterface`)."""

    @property
    def columns(self) -> Sequence[ColumnDecl]: ...
    @property
    def tables(self) -> Sequence[TableDecl]: ...
    @property
    def parameters(self) -> Sequence[ParameterDecl]: ...
    @property
    def scenario_inputs(self) -> Sequence[NamedDecl]: ...
    @property
    def outputs(self) -> Sequence[OutputDecl]: ...


class _Symbols:
    """The C names the header defines: each once (``table_a_size`` for a table ``a`` and a table
    ``a_size`` would be one name), and none a user's name turns into an ``LC_`` name of the ABI."""

    def __init__(self) -> None:
        self._owner: dict[str, str] = {}

    def add(self, symbol: str, owner: str, *, abi: bool = False) -> str:
        if not abi and symbol.startswith("LC_"):
            raise ValueError(f"{owner} would define {symbol}; names starting LC_ belong to the ABI header")
        if symbol in self._owner:
            raise ValueError(f"{owner} and {self._owner[symbol]} would both define {symbol}")
        self._owner[symbol] = owner
        return symbol


def _identifier(name: str, what: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"{what} {name!r} is not a lower-case identifier ([a-z][a-z0-9_]*)")
    return name


def _value_macro(column: str, value: str) -> str:
    text = value.strip()
    if not text:
        raise ValueError(f"column {column!r} has an empty category value")
    return f"{column.upper()}_{re.sub(r'[^A-Za-z0-9]', '_', text).upper()}"


def _accessor(ret: str, name: str, body: str, extra: str = "") -> list[str]:
    return [
        f"static inline {ret}{'' if ret.endswith('*') else ' '}{name}(LC_BASE_ARG const lc_ctx *c{extra}) {{",
        f"    return {body};",
        "}",
    ]


def render_header(interface: InterfaceDecl) -> str:
    """``model_interface.h`` for ``interface``; ValueError when a name cannot become C."""
    sym = _Symbols()
    out: list[str] = [
        "/*",
        f" * {HEADER_NAME}: GENERATED from the model's declared interface by",
        " * services/valuation/sdk/c_header.py; do not edit (change the declaration and regenerate).",
        " *",
        " * Named, typed accessors of what the declaration lays out (docs/model-interface.md):",
        " * call them with LC_BASE first, e.g. col_NAME(LC_BASE c)[i]; interface_check(LC_BASE c)",
        " * says whether a context matches the declaration.",
        " */",
        "#ifndef LIVECALC_MODEL_INTERFACE_H",
        "#define LIVECALC_MODEL_INTERFACE_H",
        "",
        "#include <stdint.h>",
        "",
        '#include "livecalc_model.h"',
        "",
    ]
    checks: list[str] = []

    out += ["/* Policy columns, [n_rows] each, in declaration order. */"]
    out.append(f"#define {sym.add('LC_N_COLUMNS', 'the header', abi=True)} {len(interface.columns)}")
    for i, col in enumerate(interface.columns):
        name = _identifier(col.name, "column")
        if col.type not in _COLUMN_C:
            raise ValueError(f"column {name!r} has type {col.type!r}; one of {', '.join(_COLUMN_C)}")
        ctype, array, code = _COLUMN_C[col.type]
        index = sym.add(f"COL_{name.upper()}", f"column {name!r}")
        out.append(f"#define {index} {i} /* {col.type} */")
        fn = sym.add(f"col_{name}", f"column {name!r}")
        out += _accessor(f"const {ctype} *", fn, f"{array}(LC_BASE lc_column(LC_BASE c, {index}))")
        for code_value, value in enumerate(col.values if col.type == "category" else ()):
            out.append(f"#define {sym.add(_value_macro(name, value), f'column {name!r} value {value!r}')} {code_value}")
        checks.append(f"if (!lc_column_is(LC_BASE c, {index}, {code})) return LC_E_ABI;")
    out.append("")

    out += ["/* Tables, f64, row-major; origin(axis) is the label of index 0 on that axis. */"]
    out.append(f"#define {sym.add('LC_N_TABLES', 'the header', abi=True)} {len(interface.tables)}")
    for i, table in enumerate(interface.tables):
        name = _identifier(table.name, "table")
        index = sym.add(f"TABLE_{name.upper()}", f"table {name!r}")
        out.append(f"#define {index} {i}")
        checks.append(f"if (!lc_table_is(LC_BASE c, {index}, {len(table.axes)})) return LC_E_ABI;")
        for j, axis in enumerate(table.axes):
            axis_name = _identifier(axis.name, f"table {name!r} axis")
            axis_index = sym.add(f"AXIS_{name.upper()}_{axis_name.upper()}", f"table {name!r} axis {axis_name!r}")
            out.append(f"#define {axis_index} {j}")
            if axis.size is not None:
                checks.append(
                    f"if (lc_table(LC_BASE c, {index})->shape[{axis_index}] != {axis.size}u) return LC_E_ABI;"
                )
        desc = f"lc_table(LC_BASE c, {index})"
        out += _accessor("const double *", sym.add(f"table_{name}", f"table {name!r}"), f"lc_f64(LC_BASE {desc})")
        out += _accessor(
            "int32_t", sym.add(f"table_{name}_origin", f"table {name!r}"), f"{desc}->origin[axis]", ", uint32_t axis"
        )
        out += _accessor(
            "uint32_t", sym.add(f"table_{name}_size", f"table {name!r}"), f"{desc}->shape[axis]", ", uint32_t axis"
        )
    out.append("")

    out += ["/* Parameters, one 8-byte slot each. */"]
    out.append(f"#define {sym.add('LC_N_PARAMS', 'the header', abi=True)} {len(interface.parameters)}")
    for i, param in enumerate(interface.parameters):
        name = _identifier(param.name, "parameter")
        if param.type not in _PARAMETER_C:
            raise ValueError(f"parameter {name!r} has type {param.type!r}; one of {', '.join(_PARAMETER_C)}")
        ctype, read = _PARAMETER_C[param.type]
        index = sym.add(f"PARAM_{name.upper()}", f"parameter {name!r}")
        out.append(f"#define {index} {i} /* {param.type} */")
        out += _accessor(ctype, sym.add(f"param_{name}", f"parameter {name!r}"), f"{read}(LC_BASE c, {index})")
    out.append("")

    out += ["/* Scenario inputs, f64 [n_scen][stride], stride ≥ n_months. */"]
    out.append(f"#define {sym.add('LC_N_SCENARIO_INPUTS', 'the header', abi=True)} {len(interface.scenario_inputs)}")
    for i, scen in enumerate(interface.scenario_inputs):
        name = _identifier(scen.name, "scenario input")
        index = sym.add(f"SCEN_{name.upper()}", f"scenario input {name!r}")
        out.append(f"#define {index} {i}")
        desc = f"lc_scenario_input(LC_BASE c, {index})"
        out += _accessor(
            "const double *", sym.add(f"scen_{name}", f"scenario input {name!r}"), f"lc_f64(LC_BASE {desc})"
        )
        out += _accessor("uint32_t", sym.add(f"scen_{name}_stride", f"scenario input {name!r}"), f"{desc}->shape[1]")
        checks.append(f"if (!lc_scenario_input_is(LC_BASE c, {index})) return LC_E_ABI;")
    out.append("")

    out += ["/* Outputs: k of partials[b][k][s], in the model's order. */"]
    primary = [i for i, o in enumerate(interface.outputs) if o.primary]
    if len(primary) != 1:
        raise ValueError(f"exactly one output must be primary, found {len(primary)}")
    for i, output in enumerate(interface.outputs):
        name = _identifier(output.name, "output")
        out.append(f"#define {sym.add(f'OUT_{name.upper()}', f'output {name!r}')} {i}")
    out.append(f"#define {sym.add('LC_N_OUTPUTS', 'the header', abi=True)} {len(interface.outputs)}")
    primary_name = interface.outputs[primary[0]].name.upper()
    out.append(f"#define {sym.add('LC_PRIMARY_OUTPUT', 'the header', abi=True)} OUT_{primary_name}")
    out.append("")

    out += ["/* Monthly outputs: m of cash_flows[b][m][s][t], the outputs declared monthly in their order. */"]
    monthly = [o for o in interface.outputs if o.monthly]
    for m, output in enumerate(monthly):
        out.append(f"#define {sym.add(f'MONTHLY_{output.name.upper()}', f'output {output.name!r}')} {m}")
    out.append(f"#define {sym.add('LC_N_MONTHLY', 'the header', abi=True)} {len(monthly)}")
    out.append("")

    digest = sym.add("LC_INTERFACE_DIGEST", "the header", abi=True)
    out += [
        "/* The digest of the layout above (services/valuation/sdk/digest.py), exported so that the",
        " * package validator can tell a binary compiled for another declaration. Weak: a model of",
        " * several C files defines it once. */",
        f"#define {digest} {digest_text(interface_digest(interface))}u",
        f"LC_EXPORT({DIGEST_EXPORT}) __attribute__((weak)) uint32_t {DIGEST_EXPORT}(void) {{ return {digest}; }}",
        "",
        "/* What lc_run_blocks writes besides the partials (LC_FEATURE_ROW_VALUES, LC_FEATURE_CASH_FLOWS of",
        " * livecalc_model.h): define LC_FEATURES before including this header in a model that writes",
        " * them; without it the export says 0 (partials only: the engine then values one row per run",
        " * for row values, and refuses cash flows). Weak: a model of several C files defines it once. */",
        "#ifndef LC_FEATURES",
        "#define LC_FEATURES 0",
        "#endif",
        f"LC_EXPORT({FEATURES_EXPORT}) __attribute__((weak)) int32_t {FEATURES_EXPORT}(void) {{ return LC_FEATURES; }}",
        "",
        "/* LC_OK when the context is of ABI v2 and lays out this declaration; LC_E_ABI otherwise. */",
        "static inline int32_t interface_check(LC_BASE_ARG const lc_ctx *c) {",
        "    if (lc_check_context(c) != LC_OK) return LC_E_ABI;",
        "    if (c->n_columns != LC_N_COLUMNS || c->n_tables != LC_N_TABLES || c->n_params != LC_N_PARAMS ||",
        "        c->n_scenario_inputs != LC_N_SCENARIO_INPUTS || c->n_outputs != LC_N_OUTPUTS)",
        "        return LC_E_ABI;",
        "    if (c->cash_flows && c->n_monthly != LC_N_MONTHLY) return LC_E_ABI;",
        *(f"    {line}" for line in checks),
        "    return LC_OK;",
        "}",
        "",
        "#endif",
    ]
    return "\n".join(out) + "\n"


def load_interface(path: Path) -> ModelInterface:
    """The declaration in a JSON file: a package config (key ``interface``) or the interface itself."""
    from services.valuation.interface.parser import interface_of  # noqa: PLC0415 (numpy only when asked)

    raw: Any = json.loads(path.read_text(encoding="utf-8"))
    config = raw if isinstance(raw, dict) and "interface" in raw else {"interface": raw}
    return interface_of(config)


def write_header(interface: InterfaceDecl, path: Path) -> bool:
    """Render ``interface`` into ``path``; True when that changed the file."""
    text = render_header(interface)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render model_interface.h from a declared model interface.")
    parser.add_argument("declaration", type=Path, help="JSON: a package config or its interface object")
    parser.add_argument("--out", type=Path, help="the header to write (default: standard output)")
    parser.add_argument("--check", action="store_true", help="only say whether --out is current (exit 1 if not)")
    args = parser.parse_args(argv)
    text = render_header(load_interface(args.declaration))
    if args.out is None:
        sys.stdout.write(text)
        return 0
    if args.check:
        current = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        if not current:
            print(f"{args.out} is stale: regenerate it from {args.declaration}", file=sys.stderr)
        return 0 if current else 1
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
