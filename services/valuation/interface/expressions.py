"""The small expression language of declared rules and horizons (docs/model-interface.md).

``age_at_entry + policy_term <= 121``, ``12 * policy_term - duration_mth``,
``age_at_entry + max(duration_mth, 0) // 12 >= mortality.age.first``: column names, numbers,
arithmetic, comparisons, ``and``/``or``/``not``, ``min``/``max``/``abs`` and table bounds.
Parsed with Python's own parser and then checked node by node against a short whitelist, so a
declaration can never run anything but arithmetic; evaluated on numpy columns (float64).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt

Value = npt.NDArray[Any] | float

_BINARY: Final[Mapping[type[ast.operator], Callable[[Any, Any], Any]]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
}
_COMPARE: Final[Mapping[type[ast.cmpop], Callable[[Any, Any], Any]]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FUNCTIONS: Final[Mapping[str, tuple[int, Callable[..., Any]]]] = {
    "min": (2, np.minimum),
    "max": (2, np.maximum),
    "abs": (1, np.abs),
}
BOUNDS: Final = ("first", "last", "size")
"""What a table bound ``TABLE.AXIS.<bound>`` may ask for."""


class ExpressionError(ValueError):
    """An expression that is not in the language (the message says what and where)."""


@dataclass(frozen=True)
class Expression:
    """A parsed, checked expression: its text, the columns and table bounds it reads."""

    text: str
    tree: ast.expr
    columns: frozenset[str]
    bounds: frozenset[tuple[str, str, str]]
    """(table, axis, first|last|size) triples."""

    def evaluate(self, columns: Mapping[str, Value], bounds: Mapping[tuple[str, str, str], float]) -> Value:
        """The value over ``columns`` (numpy arrays, float64 arithmetic) with table ``bounds``."""
        return _eval(self.tree, columns, bounds)


def parse(text: str) -> Expression:
    """Parse ``text``; `ExpressionError` names the first construct outside the language."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("must be a non-empty expression")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"is not an expression: {exc.msg}") from exc
    columns: set[str] = set()
    bounds: set[tuple[str, str, str]] = set()
    _check(tree, columns, bounds)
    return Expression(text, tree, frozenset(columns), frozenset(bounds))


def _bound(node: ast.Attribute) -> tuple[str, str, str] | None:
    axis = node.value
    if isinstance(axis, ast.Attribute) and isinstance(axis.value, ast.Name) and node.attr in BOUNDS:
        return (axis.value.id, axis.attr, node.attr)
    return None


def _check(node: ast.AST, columns: set[str], bounds: set[tuple[str, str, str]]) -> None:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ExpressionError(f"only numbers are allowed as constants, not {node.value!r}")
    elif isinstance(node, ast.Name):
        columns.add(node.id)
    elif isinstance(node, ast.Attribute):
        bound = _bound(node)
        if bound is None:
            raise ExpressionError(f"{ast.unparse(node)!r}: a table bound is TABLE.AXIS.first, .last or .size")
        bounds.add(bound)
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check(node.left, columns, bounds)
        _check(node.right, columns, bounds)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd | ast.Not):
        _check(node.operand, columns, bounds)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, columns, bounds)
    elif isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        for part in (node.left, *node.comparators):
            _check(part, columns, bounds)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        arity = _FUNCTIONS[node.func.id][0]
        if node.keywords or len(node.args) != arity:
            raise ExpressionError(f"{node.func.id}() takes {arity} argument{'s' if arity > 1 else ''}")
        for arg in node.args:
            _check(arg, columns, bounds)
    else:
        raise ExpressionError(f"{ast.unparse(node)!r} is not allowed (numbers, columns, + - * / //, "
                              "comparisons, and/or/not, min/max/abs, TABLE.AXIS.first|last|size)")  # fmt: skip


def _eval(node: ast.expr, columns: Mapping[str, Value], bounds: Mapping[tuple[str, str, str], float]) -> Value:
    if isinstance(node, ast.Constant):
        return float(cast(float, node.value))
    if isinstance(node, ast.Name):
        return np.asarray(columns[node.id], dtype=np.float64)
    if isinstance(node, ast.Attribute):
        bound = _bound(node)
        assert bound is not None  # parse() admitted only bounds
        return float(bounds[bound])
    if isinstance(node, ast.BinOp):
        with np.errstate(divide="ignore", invalid="ignore"):
            left, right = _eval(node.left, columns, bounds), _eval(node.right, columns, bounds)
            result: Value = _BINARY[type(node.op)](left, right)
        return result
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, columns, bounds)
        if isinstance(node.op, ast.Not):
            return np.logical_not(operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BoolOp):
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        values = [_eval(v, columns, bounds) for v in node.values]
        out = values[0]
        for v in values[1:]:
            out = combine(out, v)
        return out
    if isinstance(node, ast.Compare):
        left = _eval(node.left, columns, bounds)
        out_c: Value = True
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, columns, bounds)
            out_c = np.logical_and(out_c, _COMPARE[type(op)](left, right))
            left = right
        return out_c
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        fn = _FUNCTIONS[node.func.id][1]
        result_c: Value = fn(*(_eval(a, columns, bounds) for a in node.args))
        return result_c
    raise ExpressionError(f"cannot evaluate {ast.unparse(node)!r}")
