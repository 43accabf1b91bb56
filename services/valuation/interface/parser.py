"""The declaration's parser: every problem found at once, each with its JSON path.

`parse_interface` turns ``config["interface"]`` into a frozen `ModelInterface` (or None) and a
list of `Issue`s; checks that need the package's files (tables against their declared axes,
the binary's exports) live with the package validator. The rules of docs/model-interface.md
are applied here and nowhere else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, cast

from services.valuation.interface.declaration import (
    ABI_VERSION,
    AM,
    COLUMN_TYPES,
    INT32_RANGE,
    PARAMETER_TYPES,
    TERM_LIFE_OUTPUTS,
    Axis,
    Bounds,
    Column,
    ModelInterface,
    Output,
    Outputs,
    Parameter,
    Rule,
    ScenarioInput,
    Table,
)
from services.valuation.interface.expressions import Expression, ExpressionError, parse
from services.valuation.packages.report import Issue, error, warning

MAX_ITEMS: Final = 256
"""Most columns, tables, parameters, scenario inputs or outputs one declaration may have."""
_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,62}")
RESERVED_NAMES: Final = frozenset({"and", "or", "not", "min", "max", "abs", "scenario", "month"})


def outputs_of(config: Mapping[str, Any]) -> Outputs:
    """The outputs a package's config declares (term life's five, each monthly as the shipped
    declaration says, for a config without ``interface``)."""
    raw = config.get("interface")
    if isinstance(raw, Mapping):
        interface, _ = parse_interface(raw)
        if interface is not None:
            return interface.output_list
    return Outputs(TERM_LIFE_OUTPUTS, TERM_LIFE_OUTPUTS.index("net_cf"), tuple(range(len(TERM_LIFE_OUTPUTS))))


def interface_of(config: Mapping[str, Any]) -> ModelInterface:
    """The config's declaration; ValueError listing every problem when it has none or a broken one."""
    interface, issues = parse_interface(config.get("interface"))
    errors = [i for i in issues if i.severity == "error"]
    if interface is None or errors:
        raise ValueError("invalid model interface: " + "; ".join(f"{i.where}: {i.message}" for i in errors))
    return interface


class _Reader:
    """Collects issues while reading typed fields of JSON objects."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def fail(self, where: str, message: str) -> None:
        self.issues.append(error(where, message))

    def warn(self, where: str, message: str) -> None:
        self.issues.append(warning(where, message))

    def obj(self, raw: Any, where: str, allowed: Sequence[str]) -> Mapping[str, Any] | None:
        if not isinstance(raw, Mapping):
            self.fail(where, "must be an object")
            return None
        for key in raw:
            if key not in allowed:
                self.fail(f"{where}.{key}", f"unknown field (allowed: {', '.join(allowed)})")
        return cast(Mapping[str, Any], raw)

    def objects(self, items: list[Any], where: str, allowed: Sequence[str]) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """The objects of the list at `where` (from `items`), each with its path ``where[i]``; an
        item that is not an object is reported (`obj`) and skipped."""
        for i, item in enumerate(items):
            at = f"{where}[{i}]"
            spec = self.obj(item, at, allowed)
            if spec is not None:
                yield at, spec

    def items(self, raw: Any, where: str, *, required: bool) -> list[Any]:
        if raw is None:
            if required:
                self.fail(where, "is required (a list)")
            return []
        if not isinstance(raw, list):
            self.fail(where, "must be a list")
            return []
        if len(raw) > MAX_ITEMS:
            self.fail(where, f"has {len(raw)} items; at most {MAX_ITEMS}")
            return []
        return raw

    def name(self, raw: Mapping[str, Any], where: str, seen: set[str]) -> str | None:
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            self.fail(f"{where}.name", "must be a lower-case identifier ([a-z][a-z0-9_]*, at most 63 characters)")
            return None
        if name in RESERVED_NAMES:
            self.fail(f"{where}.name", f"{name!r} is reserved")
            return None
        if name in seen:
            self.fail(f"{where}.name", f"{name!r} is declared twice")
            return None
        seen.add(name)
        return name

    def number(self, raw: Mapping[str, Any], key: str, where: str) -> float | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(f"{where}.{key}", "must be a finite number")
            return None
        return float(value)

    def integer(self, raw: Mapping[str, Any], key: str, where: str, *, minimum: int | None = None) -> int | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            self.fail(f"{where}.{key}", f"must be an integer{f' ≥ {minimum}' if minimum is not None else ''}")
            return None
        return value

    def text(self, raw: Mapping[str, Any], key: str, where: str) -> str:
        value = raw.get(key, "")
        if not isinstance(value, str):
            self.fail(f"{where}.{key}", "must be a string")
            return ""
        return value

    def bounds(self, raw: Mapping[str, Any], where: str) -> Bounds:
        b = Bounds(
            self.number(raw, "min", where),
            self.number(raw, "max", where),
            self.number(raw, "greater_than", where),
            self.number(raw, "less_than", where),
        )
        low = max((v for v in (b.min, b.greater_than) if v is not None), default=None)
        high = min((v for v in (b.max, b.less_than) if v is not None), default=None)
        if low is not None and high is not None and low > high:
            self.fail(where, "its range is empty (the lower bound is above the upper)")
        return b

    def expression(self, raw: Mapping[str, Any], key: str, where: str) -> Expression | None:
        try:
            return parse(raw.get(key))  # type: ignore[arg-type]
        except ExpressionError as exc:
            self.fail(f"{where}.{key}", str(exc))
            return None


_TOP: Final = ("abi", "policy", "tables", "parameters", "scenario_inputs", "outputs", "description")
_POLICY: Final = ("key", "columns", "rules", "horizon_months")
_COLUMN: Final = ("name", "type", "required", "default", "values", "description", "min", "max", "greater_than",
                  "less_than")  # fmt: skip
_RULE: Final = ("column", "check", "when", "rule", "message")
_TABLE: Final = ("name", "file", "axes", "description", "min", "max", "greater_than", "less_than")
_AXIS: Final = ("name", "first", "size")
_PARAMETER: Final = ("name", "type", "value", "file", "key", "default", "description", "min", "max", "greater_than",
                     "less_than")  # fmt: skip
_NAMED: Final = ("name", "description")
_OUTPUT: Final = ("name", "primary", "monthly", "description")


def parse_interface(raw: Any, where: str = "$.interface") -> tuple[ModelInterface | None, list[Issue]]:
    """The declaration as far as it could be read, and every problem in it.

    The interface is None when its core (columns, horizon, outputs) is unreadable; otherwise it
    holds what parsed (a broken rule, table or parameter is left out), so that the package's
    files can still be judged against it in the same round. Callers must refuse a declaration
    with any error (`interface_of` does)."""
    r = _Reader()
    top = r.obj(raw, where, _TOP)
    if top is None:
        return None, r.issues
    if top.get("abi") != ABI_VERSION:
        r.fail(f"{where}.abi", f"must be {ABI_VERSION} (the model ABI this mesh speaks)")
    policy = r.obj(top.get("policy"), f"{where}.policy", _POLICY) or {}
    columns = _columns(r, policy.get("columns"), f"{where}.policy.columns")
    names = {c.name for c in columns}
    key = policy.get("key")
    if key is not None and (not isinstance(key, str) or key not in names or
                            next(c for c in columns if c.name == key).type != "int64"):  # fmt: skip
        r.fail(f"{where}.policy.key", "must name a declared int64 column")
        key = None
    tables = _tables(r, top.get("tables"), f"{where}.tables", names)
    known_bounds = {(t.name, a.name) for t in tables for a in t.axes}
    rules = _rules(r, policy.get("rules"), f"{where}.policy.rules", names, known_bounds)
    horizon = r.expression(policy, "horizon_months", f"{where}.policy")
    if horizon is not None:
        _references(r, horizon, f"{where}.policy.horizon_months", names, known_bounds)
    seen = set(names) | {t.name for t in tables}
    parameters = _parameters(r, top.get("parameters"), f"{where}.parameters", seen)
    scenario_inputs = _named(r, top.get("scenario_inputs"), f"{where}.scenario_inputs", seen)
    outputs = _outputs(r, top.get("outputs"), f"{where}.outputs")
    if horizon is None or not columns or not outputs or sum(o.primary for o in outputs) != 1:
        return None, r.issues
    interface = ModelInterface(
        columns=tuple(columns),
        horizon_months=horizon,
        outputs=tuple(outputs),
        key=key,
        rules=tuple(rules),
        tables=tuple(tables),
        parameters=tuple(parameters),
        scenario_inputs=tuple(ScenarioInput(n, d) for n, d in scenario_inputs),
    )
    return interface, r.issues


def _columns(r: _Reader, raw: Any, where: str) -> list[Column]:
    out: list[Column] = []
    seen: set[str] = set()
    items = r.items(raw, where, required=True)
    if raw is not None and not items and isinstance(raw, list):
        r.fail(where, "must declare at least one column")
    for at, spec in r.objects(items, where, _COLUMN):
        name = r.name(spec, at, seen)
        kind = spec.get("type")
        if kind not in COLUMN_TYPES:
            r.fail(f"{at}.type", f"must be one of {', '.join(COLUMN_TYPES)}")
            continue
        required = spec.get("required", False)
        if not isinstance(required, bool):
            r.fail(f"{at}.required", "must be true or false")
            required = False
        values: tuple[str, ...] = ()
        if kind == "category":
            raw_values = spec.get("values")
            if (not isinstance(raw_values, list) or not raw_values or
                    not all(isinstance(v, str) and v.strip() for v in raw_values)):  # fmt: skip
                r.fail(f"{at}.values", "a category needs a non-empty list of texts")
            elif len({v.strip().upper() for v in raw_values}) != len(raw_values):
                r.fail(f"{at}.values", "repeats a value (values are compared trimmed, ignoring case)")
            else:
                values = tuple(v.strip() for v in raw_values)
        elif "values" in spec:
            r.fail(f"{at}.values", "only a category column has values")
        default = _default(r, spec, kind, values, at)
        if not required and default is None and kind != "float64":
            r.fail(f"{at}.default", "an optional integer or category column needs a default")
        bounds = r.bounds(spec, at)
        if kind == "category" and not bounds.empty:
            r.fail(at, "a category column takes no range (its values are the rule)")
        if name is not None:
            out.append(Column(name, kind, required, default, values, bounds, r.text(spec, "description", at)))
    return out


def _default(r: _Reader, spec: Mapping[str, Any], kind: str, values: tuple[str, ...], at: str) -> float | None:
    if "default" not in spec or spec["default"] is None:
        return None
    value = spec["default"]
    if kind == "category":
        if isinstance(value, str) and value.strip().upper() in [v.upper() for v in values]:
            return float([v.upper() for v in values].index(value.strip().upper()))
        r.fail(f"{at}.default", f"must be one of the values {list(values)}")
        return None
    number = r.number(spec, "default", at)
    if number is not None and kind in ("int32", "int64") and not number.is_integer():
        r.fail(f"{at}.default", "must be a whole number")
        return None
    if number is not None and kind == "int32" and not INT32_RANGE[0] <= number <= INT32_RANGE[1]:
        r.fail(f"{at}.default", "is outside int32")
        return None
    return number


def _references(r: _Reader, expr: Expression, where: str, columns: set[str], bounds: set[tuple[str, str]]) -> None:
    for name in sorted(expr.columns - columns):
        r.fail(where, f"names {name!r}, which is not a declared column")
    for table, axis, _ in sorted(expr.bounds):
        if (table, axis) not in bounds:
            r.fail(where, f"names {table}.{axis}, which is not a declared table axis")


def _rules(r: _Reader, raw: Any, where: str, columns: set[str], bounds: set[tuple[str, str]]) -> list[Rule]:
    out: list[Rule] = []
    for at, spec in r.objects(r.items(raw, where, required=False), where, _RULE):
        column = spec.get("column")
        if not isinstance(column, str) or column not in columns:
            r.fail(f"{at}.column", "must name a declared column (where violations are reported)")
        check = r.expression(spec, "check", at)
        when = r.expression(spec, "when", at) if "when" in spec else None
        for expr, key in ((check, "check"), (when, "when")):
            if expr is not None:
                _references(r, expr, f"{at}.{key}", columns, bounds)
        message = r.text(spec, "message", at) or (f"must satisfy {check.text}" if check else "")
        rule = r.text(spec, "rule", at) or "range"
        if not _NAME.fullmatch(rule):
            r.fail(f"{at}.rule", "must be a lower-case identifier")
        if check is not None and isinstance(column, str):
            out.append(Rule(column, check, message, rule, when))
    return out


def _tables(r: _Reader, raw: Any, where: str, columns: set[str]) -> list[Table]:
    out: list[Table] = []
    seen = set(columns)
    for at, spec in r.objects(r.items(raw, where, required=False), where, _TABLE):
        name = r.name(spec, at, seen)
        file = spec.get("file")
        if isinstance(file, str) and file.startswith(AM):
            r.warn(f"{at}.file", f"{file} is an Assumptions Manager reference: runs fail while none is configured")
        elif not isinstance(file, str) or not file.endswith(".csv"):
            r.fail(f"{at}.file", "must be the package path of a .csv file")
        axes: list[Axis] = []
        axis_names: set[str] = set()
        raw_axes = r.items(spec.get("axes"), f"{at}.axes", required=True)
        if isinstance(spec.get("axes"), list) and not 1 <= len(raw_axes) <= 2:
            r.fail(f"{at}.axes", "a CSV table has one or two axes")
        for ax_at, axis in r.objects(raw_axes, f"{at}.axes", _AXIS):
            axis_name = r.name(axis, ax_at, axis_names)
            first = r.integer(axis, "first", ax_at)
            size = r.integer(axis, "size", ax_at, minimum=1)
            if axis_name is not None:
                axes.append(Axis(axis_name, first or 0, size))
        if name is not None and isinstance(file, str):
            out.append(Table(name, file, tuple(axes), r.bounds(spec, at), r.text(spec, "description", at)))
    return out


def _parameters(r: _Reader, raw: Any, where: str, seen: set[str]) -> list[Parameter]:
    out: list[Parameter] = []
    for at, spec in r.objects(r.items(raw, where, required=False), where, _PARAMETER):
        name = r.name(spec, at, seen)
        kind = spec.get("type", "float64")
        if kind not in PARAMETER_TYPES:
            r.fail(f"{at}.type", f"must be one of {', '.join(PARAMETER_TYPES)}")
            continue
        value, default = r.number(spec, "value", at), r.number(spec, "default", at)
        file, key = spec.get("file"), spec.get("key")
        if isinstance(file, str) and file.startswith(AM):
            r.warn(f"{at}.file", f"{file} is an Assumptions Manager reference: runs fail while none is configured")
        elif file is not None and (not isinstance(file, str) or not file.endswith(".json")):
            r.fail(f"{at}.file", "must be the package path of a .json file")
            file = None
        if (file is None) != (key is None) or (key is not None and not isinstance(key, str)):
            r.fail(at, "a parameter read from a file needs both file and key (a dotted path)")
            file = key = None
        if value is None and file is None and default is None:
            r.fail(at, "needs a value, a file and key, or a default")
        for v, label in ((value, "value"), (default, "default")):
            if v is not None and kind != "float64" and not v.is_integer():
                r.fail(f"{at}.{label}", f"must be a whole number ({kind})")
        if name is not None:
            out.append(Parameter(name, kind, value, file, key, default, r.bounds(spec, at),
                                 r.text(spec, "description", at)))  # fmt: skip
    return out


def _named(r: _Reader, raw: Any, where: str, seen: set[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for at, spec in r.objects(r.items(raw, where, required=False), where, _NAMED):
        name = r.name(spec, at, seen)
        if name is not None:
            out.append((name, r.text(spec, "description", at)))
    return out


def _outputs(r: _Reader, raw: Any, where: str) -> list[Output]:
    out: list[Output] = []
    seen: set[str] = set()
    for at, spec in r.objects(r.items(raw, where, required=True), where, _OUTPUT):
        name = r.name(spec, at, seen)
        primary = spec.get("primary", False)
        if not isinstance(primary, bool):
            r.fail(f"{at}.primary", "must be true or false")
            primary = False
        monthly = spec.get("monthly", False)
        if not isinstance(monthly, bool):
            r.fail(f"{at}.monthly", "must be true or false")
            monthly = False
        if name is not None:
            out.append(Output(name, primary, r.text(spec, "description", at), monthly))
    if isinstance(raw, list) and raw and sum(o.primary for o in out) != 1:
        r.fail(where, "exactly one output must be primary (the one the distribution describes)")
    elif isinstance(raw, list) and not raw:
        r.fail(where, "must declare at least one output")
    return out
