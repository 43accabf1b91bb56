"""The package manifest: format version, creation time, assets, config and packageHash.

``manifest.json`` lists every file of the package except itself and ``livecalc.config.json``
(whose parsed content is the manifest's ``config``), each with its path relative to the
package root, SHA-256, size and type. Paths are relative and '/'-separated: the manifest never
records where the author's files lived (the seed's ``absolutePath`` leaked that).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from services.valuation.packages.canonical import package_hash
from services.valuation.packages.report import Issue, error

FORMAT_VERSION: Final = 1
MANIFEST: Final = "manifest.json"
CONFIG: Final = "livecalc.config.json"
ASSET_TYPES: Final = {"wasm/": "wasm", "assumptions/": "assumption", "python/": "python", "data/": "data"}
"""Top-level folders a package may hold, and the asset type of the files in each."""

_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_CREATED_AT: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def asset_type(path: str) -> str | None:
    """The type of the file at ``path`` in a package, or None when no file may live there."""
    for prefix, kind in ASSET_TYPES.items():
        if path.startswith(prefix) and len(path) > len(prefix) and not path.endswith("/"):
            if kind == "wasm" and ("/" in path[len(prefix) :] or not path.endswith(".wasm")):
                return None
            return kind
    return None


@dataclass(frozen=True)
class Asset:
    """One file of the package as the manifest lists it."""

    path: str
    sha256: str
    size: int
    type: str

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size, "type": self.type}


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest; ``package_hash`` is the one it declares (verified separately)."""

    version: int
    created_at: str
    assets: tuple[Asset, ...]
    config: dict[str, Any]
    package_hash: str

    def computed_hash(self) -> str:
        return package_hash(self.version, [a.as_json() for a in self.assets], self.config)

    def to_bytes(self) -> bytes:
        """The manifest file: sorted keys, two-space indent, assets by path (deterministic)."""
        doc = {
            "version": self.version,
            "createdAt": self.created_at,
            "assets": [a.as_json() for a in sorted(self.assets, key=lambda a: a.path)],
            "config": self.config,
            "packageHash": self.package_hash,
        }
        return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def make_manifest(files: dict[str, bytes], config: dict[str, Any], created_at: str) -> Manifest:
    """The manifest of ``files`` (path → bytes, the config and manifest excluded)."""
    assets = tuple(
        Asset(path, hashlib.sha256(data).hexdigest(), len(data), asset_type(path) or "data")
        for path, data in sorted(files.items())
    )
    draft = Manifest(FORMAT_VERSION, created_at, assets, config, "")
    return Manifest(FORMAT_VERSION, created_at, assets, config, draft.computed_hash())


def parse_manifest(data: bytes) -> tuple[Manifest | None, list[Issue]]:
    """Parse ``manifest.json``; every problem is reported with its JSON path."""
    where = MANIFEST
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [error(where, f"is not valid JSON: {exc}")]
    if not isinstance(doc, dict):
        return None, [error(where, "must hold a JSON object")]
    issues: list[Issue] = []
    version = doc.get("version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        issues.append(error(f"{where}:$.version", f"must be {FORMAT_VERSION}, got {version!r}"))
    created = doc.get("createdAt")
    if not isinstance(created, str) or not _CREATED_AT.fullmatch(created):
        issues.append(error(f"{where}:$.createdAt", "must be a UTC time like 2024-01-31T12:00:00Z"))
    declared = doc.get("packageHash")
    if not isinstance(declared, str) or not _HEX64.fullmatch(declared):
        issues.append(error(f"{where}:$.packageHash", "must be 64 lower-case hex digits"))
    config = doc.get("config")
    if not isinstance(config, dict):
        issues.append(error(f"{where}:$.config", "must be an object"))
    assets: list[Asset] = []
    raw_assets = doc.get("assets")
    if not isinstance(raw_assets, list):
        issues.append(error(f"{where}:$.assets", "must be a list"))
        raw_assets = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_assets):
        at = f"{where}:$.assets[{i}]"
        if not isinstance(raw, dict):
            issues.append(error(at, "must be an object"))
            continue
        path, sha, size, kind = raw.get("path"), raw.get("sha256"), raw.get("size"), raw.get("type")
        if not isinstance(path, str) or asset_type(path) is None:
            issues.append(error(f"{at}.path", f"{path!r} is not a path a package may hold"))
            continue
        if path in seen:
            issues.append(error(f"{at}.path", f"{path} is listed twice"))
            continue
        seen.add(path)
        if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
            issues.append(error(f"{at}.sha256", "must be 64 lower-case hex digits"))
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            issues.append(error(f"{at}.size", "must be a non-negative integer"))
            continue
        if not isinstance(kind, str) or kind != asset_type(path):
            issues.append(error(f"{at}.type", f"must be {asset_type(path)!r} for {path}, got {kind!r}"))
            continue
        assets.append(Asset(path, sha, size, kind))
    if issues:
        return None, issues
    assert isinstance(version, int) and isinstance(created, str) and isinstance(config, dict)
    assert isinstance(declared, str)
    return Manifest(version, created, tuple(assets), config, declared), []
