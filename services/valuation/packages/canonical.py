"""Canonical JSON and the package hash.

The packageHash must not depend on how the manifest happens to be formatted, nor on when the
package was built, so it is defined over a canonical form: UTF-8, keys sorted, no whitespace,
of ``{"version", "assets" sorted by path, "config"}`` only. Because it excludes itself and
``createdAt``, it can sit inside the manifest it identifies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any


def canonical_json(value: Any) -> bytes:
    """UTF-8 JSON with sorted keys and no whitespace (floats as Python's shortest repr)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def package_hash(version: int, assets: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> str:
    """Lower-case hex SHA-256 of the canonical JSON of version, assets (by path) and config."""
    ordered = sorted((dict(a) for a in assets), key=lambda a: str(a.get("path", "")))
    return hashlib.sha256(canonical_json({"version": version, "assets": ordered, "config": config})).hexdigest()
