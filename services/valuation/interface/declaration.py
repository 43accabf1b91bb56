"""The declaration's types: what a checked model interface (docs/model-interface.md) holds.

A `ModelInterface` is frozen and only ever built by the parser (`parser.parse_interface`), so
code that holds one may rely on every rule of the declaration having been applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from services.valuation.interface.expressions import Expression

ABI_VERSION: Final = 2
ColumnType = Literal["int32", "int64", "float64", "category"]
ParameterType = Literal["float64", "int64", "uint64"]
COLUMN_TYPES: Final[tuple[ColumnType, ...]] = ("int32", "int64", "float64", "category")
PARAMETER_TYPES: Final[tuple[ParameterType, ...]] = ("float64", "int64", "uint64")
ABI_TYPE_CODES: Final[Mapping[ColumnType, int]] = {"int32": 1, "int64": 2, "float64": 3, "category": 4}
"""`lc_array.type` of each column type."""
DTYPES: Final[Mapping[ColumnType, type[np.generic]]] = {
    "int32": np.int32,
    "int64": np.int64,
    "float64": np.float64,
    "category": np.int32,
}
INT32_RANGE: Final = (-(2**31), 2**31 - 1)

AM: Final = "am://"
"""An Assumptions Manager reference in place of a package file."""
TERM_LIFE_OUTPUTS: Final = ("premiums", "claims", "expenses", "commissions", "net_cf")
"""Term life's present values in its declaration's order (reference_model/term_life.interface.json,
held equal by a test), net_cf (the primary) last: the outputs of a package without a declaration,
and every order the gateway and the engine write term life's components in (old stores' orders
are derived from it)."""
TERM_LIFE_CASH_FLOWS: Final = TERM_LIFE_OUTPUTS[:-1]
"""The four cash flows whose present values net_cf nets (premiums less the other three)."""


@dataclass(frozen=True)
class Bounds:
    """Range of a value: ``min ≤ v ≤ max``, ``greater_than < v < less_than`` (None: unbounded)."""

    min: float | None = None
    max: float | None = None
    greater_than: float | None = None
    less_than: float | None = None

    def breaks(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """Where ``values`` fall outside the range (NaN never breaks: absence is judged elsewhere)."""
        bad = np.zeros(values.shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            if self.min is not None:
                bad |= values < self.min
            if self.max is not None:
                bad |= values > self.max
            if self.greater_than is not None:
                bad |= values <= self.greater_than
            if self.less_than is not None:
                bad |= values >= self.less_than
        return bad

    def describe(self) -> str:
        """``must be ≥ 0 and ≤ 120`` style text."""
        parts = []
        if self.min is not None:
            parts.append(f"≥ {_number(self.min)}")
        if self.greater_than is not None:
            parts.append(f"> {_number(self.greater_than)}")
        if self.max is not None:
            parts.append(f"≤ {_number(self.max)}")
        if self.less_than is not None:
            parts.append(f"< {_number(self.less_than)}")
        return "must be " + " and ".join(parts) if parts else ""

    @property
    def empty(self) -> bool:
        return self.min is None and self.max is None and self.greater_than is None and self.less_than is None


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


@dataclass(frozen=True)
class Column:
    """A policy column: name, type, whether required, the value of an empty cell, its range."""

    name: str
    type: ColumnType
    required: bool = False
    default: float | None = None
    """Empty cell's value (a category's default is its code); None: NaN (optional float64 only)."""
    values: tuple[str, ...] = ()
    """A category's accepted texts; code i is values[i]."""
    bounds: Bounds = Bounds()
    description: str = ""

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(DTYPES[self.type])

    @property
    def abi_type(self) -> int:
        return ABI_TYPE_CODES[self.type]


@dataclass(frozen=True)
class Rule:
    """A row rule: rows where ``when`` holds (all rows when None) must satisfy ``check``."""

    column: str
    check: Expression
    message: str
    rule: str = "range"
    when: Expression | None = None

    @property
    def columns(self) -> frozenset[str]:
        return self.check.columns | (self.when.columns if self.when else frozenset())

    @property
    def bounds(self) -> frozenset[tuple[str, str, str]]:
        return self.check.bounds | (self.when.bounds if self.when else frozenset())


@dataclass(frozen=True)
class Axis:
    """A table axis: its labels are first, first + 1, … (``size`` of them when declared)."""

    name: str
    first: int = 0
    size: int | None = None


@dataclass(frozen=True)
class Table:
    """An assumption table read from a CSV file of the package."""

    name: str
    file: str
    axes: tuple[Axis, ...]
    bounds: Bounds = Bounds()
    description: str = ""


@dataclass(frozen=True)
class Parameter:
    """A scalar: ``value``, or ``key`` (a dotted path) of the JSON ``file``, else ``default``."""

    name: str
    type: ParameterType = "float64"
    value: float | None = None
    file: str | None = None
    key: str | None = None
    default: float | None = None
    bounds: Bounds = Bounds()
    description: str = ""


@dataclass(frozen=True)
class ScenarioInput:
    """A named f64 [scenario][month] buffer the model reads."""

    name: str
    description: str = ""


@dataclass(frozen=True)
class Output:
    """A named present value the model writes; the ``primary`` one is what the distribution describes.
    A ``monthly`` one is also a cash flow the model writes by month (docs/model-interface.md)."""

    name: str
    primary: bool = False
    description: str = ""
    monthly: bool = False


@dataclass(frozen=True)
class Outputs:
    """Output names in the model's order and the index of the primary."""

    names: tuple[str, ...]
    primary: int
    monthly: tuple[int, ...] = ()
    """Indexes of the outputs declared monthly, in declared order (m of the cash flows is monthly[m])."""

    @property
    def primary_name(self) -> str:
        return self.names[self.primary]

    @property
    def monthly_names(self) -> tuple[str, ...]:
        return tuple(self.names[k] for k in self.monthly)


@dataclass(frozen=True)
class ModelInterface:
    """A checked declaration (docs/model-interface.md)."""

    columns: tuple[Column, ...]
    horizon_months: Expression
    outputs: tuple[Output, ...]
    key: str | None = None
    rules: tuple[Rule, ...] = ()
    tables: tuple[Table, ...] = ()
    parameters: tuple[Parameter, ...] = ()
    scenario_inputs: tuple[ScenarioInput, ...] = ()
    _columns: dict[str, Column] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._columns.update({c.name: c for c in self.columns})

    def column(self, name: str) -> Column:
        return self._columns[name]

    @property
    def output_list(self) -> Outputs:
        names = tuple(o.name for o in self.outputs)
        primary = next(i for i, o in enumerate(self.outputs) if o.primary)
        return Outputs(names, primary, tuple(i for i, o in enumerate(self.outputs) if o.monthly))

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def table(self, name: str) -> Table:
        return next(t for t in self.tables if t.name == name)

    def declared_bounds(self) -> dict[tuple[str, str, str], float]:
        """Table bounds the declaration alone fixes (axes with a declared ``size``)."""
        out: dict[tuple[str, str, str], float] = {}
        for t in self.tables:
            for a in t.axes:
                out[(t.name, a.name, "first")] = float(a.first)
                if a.size is not None:
                    out[(t.name, a.name, "size")] = float(a.size)
                    out[(t.name, a.name, "last")] = float(a.first + a.size - 1)
        return out
