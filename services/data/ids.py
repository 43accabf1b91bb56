"""Dataset ids: the one place that decides which names may reach a storage backend.

An id becomes an object name (`<id>.csv` / `<id>.parquet`) in a directory or a blob
container, so anything that could escape the root (separators, `..`, absolute paths,
drive letters) or hide an object (a leading dot: indexes and uploads in progress use
dot-names) is refused with INVALID_ARGUMENT before any storage call is made.
"""

from __future__ import annotations

import re
from typing import Final

from services.common.errors import FieldViolation, InvalidArgument

MAX_ID_LENGTH: Final = 128
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def validate_dataset_id(dataset_id: str, field: str = "dataset_id") -> str:
    """Return `dataset_id` unchanged if it is a safe dataset id, else raise InvalidArgument."""
    problem = _problem(dataset_id)
    if problem is not None:
        raise InvalidArgument(
            f"invalid dataset id {dataset_id[:80]!r}: {problem}",
            (FieldViolation(field, problem),),
        )
    return dataset_id


def _problem(dataset_id: str) -> str | None:
    if not dataset_id:
        return "must not be empty"
    if len(dataset_id) > MAX_ID_LENGTH:
        return f"must be at most {MAX_ID_LENGTH} characters"
    if dataset_id.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", dataset_id):
        return "must not be an absolute path"
    if ".." in dataset_id:
        return "must not contain '..'"
    if "/" in dataset_id or "\\" in dataset_id:
        return "must not contain path separators"
    if not _ID.fullmatch(dataset_id):
        return "may hold only letters, digits, '.', '_' and '-', and must start with a letter or digit"
    return None
