"""Files a result (or a comparison) is written to, in the format the path's suffix names.

Every `--out` that writes results takes one of three suffixes:

- ``.json``: the whole document (`report.result_document`: statistics, every output's values by
  scenario, provenance and spec; or a comparison's document);
- ``.csv``: the document's table (a result: one row per scenario, ``scenario`` then one column
  per output, values written with Python's shortest round-trip repr, so they read back to the
  same float64); statistics stay in the .json;
- ``.parquet``: the same table, with the document's identity (provenance, spec, result hash…)
  as JSON in the schema's key-value metadata under ``livecalc.*`` keys.

Any other suffix is refused before a job is submitted (`check_suffix`), never after it ran.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from services.client.report import json_ready, json_text
from services.common.errors import InvalidArgument

SUFFIXES: Final = (".json", ".csv", ".parquet")
#: Parquet schema metadata keys start with this; each value is a JSON text.
METADATA_PREFIX: Final = "livecalc."

#: A table: column name → values (every column as long as the first).
Columns = Mapping[str, Sequence[Any]]


def check_suffix(path: str | Path, what: str = "--out") -> Path:
    """``path`` as a Path when its suffix is one `write_document` knows; else InvalidArgument."""
    out = Path(path)
    if out.suffix.lower() not in SUFFIXES:
        raise InvalidArgument(
            f"{what} {path}: write .json (the whole document), .csv or .parquet (the table); "
            f"not {out.suffix or 'a path without a suffix'}"
        )
    return out


def write_document(
    path: str | Path, document: Mapping[str, Any], columns: Columns, metadata: Mapping[str, Any]
) -> None:
    """``document`` to a .json path, else ``columns`` as a .csv or .parquet table (``metadata``
    in the Parquet schema, each value as JSON under ``livecalc.KEY``)."""
    out = check_suffix(path)
    suffix = out.suffix.lower()
    if suffix == ".json":
        out.write_text(json_text(document))
    elif suffix == ".csv":
        _write_csv(out, columns)
    else:
        _write_parquet(out, columns, metadata)


def _cell(value: Any) -> Any:
    """A float as its shortest round-trip text (repr), so a reader gets the same float64 back."""
    return repr(value) if isinstance(value, float) else value


def _write_csv(path: Path, columns: Columns) -> None:
    names = list(columns)
    rows = zip(*(columns[n] for n in names), strict=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        writer.writerows([_cell(v) for v in row] for row in rows)


def _write_parquet(path: Path, columns: Columns, metadata: Mapping[str, Any]) -> None:
    import pyarrow as pa  # noqa: PLC0415 - pyarrow is heavy; only Parquet exports need it
    import pyarrow.parquet as pq  # noqa: PLC0415

    table = pa.table({name: list(values) for name, values in columns.items()})
    meta = {f"{METADATA_PREFIX}{k}".encode(): json.dumps(json_ready(v)).encode() for k, v in metadata.items()}
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **meta}), path)


def scenario_columns(document: Mapping[str, Any]) -> dict[str, list[Any]]:
    """A results document's table: ``scenario`` (0…N−1) and each output's value by scenario."""
    outputs = document.get("outputs") or []
    count = max((len(o.get("values") or []) for o in outputs), default=0)
    columns: dict[str, list[Any]] = {"scenario": list(range(count))}
    for o in outputs:
        values = [float(v) for v in o.get("values") or []]
        if len(values) != count:
            raise InvalidArgument(f"output {o.get('name')} has {len(values)} values, others {count}")
        columns[str(o["name"])] = values
    return columns


#: The parts of a results document the Parquet schema carries besides the table.
RESULT_METADATA_KEYS: Final = (
    "job_id",
    "result_hash",
    "primary_output",
    "package_hash",
    "dataset_id",
    "dataset_version",
    "policy_count",
    "preview",
    "provenance",
    "spec",
)


def write_results(path: str | Path, document: Mapping[str, Any]) -> None:
    """A results document (`report.result_document`) to ``path`` as .json, .csv or .parquet."""
    metadata = {k: document[k] for k in RESULT_METADATA_KEYS if k in document}
    write_document(path, document, scenario_columns(document), metadata)
