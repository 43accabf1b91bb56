"""Column types of datasets: the contract's ColumnType, Arrow types and the policy record's kinds.

One mapping between Arrow types (what readers produce), the contract's ColumnType and the
types the CSV reader is told to use, so a column has the same type in every answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

import pyarrow as pa

from livecalc.data.v1 import data_pb2
from services.valuation.policy_schema import TERM_LIFE, ColumnKind

ColumnTypeValue: TypeAlias = data_pb2.ColumnType.ValueType


@dataclass(frozen=True)
class ColumnSpec:
    """One column as the catalog reports it."""

    name: str
    type: ColumnTypeValue
    nullable: bool = True

    def to_proto(self) -> data_pb2.Column:
        return data_pb2.Column(name=self.name, type=self.type, nullable=self.nullable)


_ARROW_FOR: Final[Mapping[ColumnTypeValue, pa.DataType]] = {
    data_pb2.COLUMN_TYPE_INT64: pa.int64(),
    data_pb2.COLUMN_TYPE_FLOAT64: pa.float64(),
    data_pb2.COLUMN_TYPE_STRING: pa.string(),
    data_pb2.COLUMN_TYPE_BOOL: pa.bool_(),
}


def column_type_of(arrow_type: pa.DataType) -> ColumnTypeValue:
    """The contract's type for an Arrow type (UNSPECIFIED for anything else)."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_integer(arrow_type):
        return data_pb2.COLUMN_TYPE_INT64
    if pa.types.is_floating(arrow_type):
        return data_pb2.COLUMN_TYPE_FLOAT64
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return data_pb2.COLUMN_TYPE_STRING
    if pa.types.is_boolean(arrow_type):
        return data_pb2.COLUMN_TYPE_BOOL
    return data_pb2.COLUMN_TYPE_UNSPECIFIED


def arrow_type_of(column_type: ColumnTypeValue) -> pa.DataType:
    """The Arrow type CSV cells of this column are converted to (text when unknown)."""
    return _ARROW_FOR.get(column_type, pa.string())


_CONTRACT_TYPE: Final[Mapping[ColumnKind, ColumnTypeValue]] = {
    "int64": data_pb2.COLUMN_TYPE_INT64,
    "float64": data_pb2.COLUMN_TYPE_FLOAT64,
    "string": data_pb2.COLUMN_TYPE_STRING,
}


def contract_type(kind: ColumnKind) -> ColumnTypeValue:
    """The contract's ColumnType of a policy column kind (services.valuation.policy_schema)."""
    return _CONTRACT_TYPE[kind]


KNOWN_TYPES: Final[Mapping[str, ColumnTypeValue]] = {c.name: contract_type(c.kind) for c in TERM_LIFE}
"""Types of the policy record's columns (the domain's definition, in the contract's terms)."""


def settle_csv_type(name: str, inferred: pa.DataType) -> ColumnTypeValue:
    """The type a CSV column is read as.

    Columns of the policy schema get the schema's type, so text in a numeric policy column
    is reported as an error wherever it is (whole floats in an integer column stay float:
    validation judges them). Other columns get the type inferred from the head of the file;
    a column empty there, or of another kind (dates), is read as text.
    """
    known = KNOWN_TYPES.get(name)
    found = column_type_of(inferred)
    if known is not None:
        if known == data_pb2.COLUMN_TYPE_INT64 and found == data_pb2.COLUMN_TYPE_FLOAT64:
            return found
        return known
    if pa.types.is_null(inferred) or found == data_pb2.COLUMN_TYPE_UNSPECIFIED:
        return data_pb2.COLUMN_TYPE_STRING
    return found
