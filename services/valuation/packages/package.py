"""Whole packages: build one from an author's directory, verify one from archive bytes.

`verify_archive` is the one gate every consumer uses (CLI validate/inspect, the gateway's
upload, the engine's loader): safe unpack, manifest against files (every entry listed, every
listed entry present, sizes and SHA-256), the declared packageHash recomputed, the config file
equal to the manifest's copy, then the content checks (config rules, WASM binaries, assumption
tables). Every problem found is reported at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from services.valuation.interface.declaration import AM
from services.valuation.interface.parser import parse_interface
from services.valuation.interface.tables import asset_issues
from services.valuation.packages.archive import PackageLimits, read_archive, write_archive
from services.valuation.packages.config import validate_config
from services.valuation.packages.manifest import CONFIG, MANIFEST, Manifest, asset_type, make_manifest, parse_manifest
from services.valuation.packages.report import Issue, PackageInvalid, error, raise_on_errors
from services.valuation.packages.wasm_checks import check_pipeline_binaries


@dataclass(frozen=True)
class Package:
    """A verified package: its manifest, its files (path → bytes) and the warnings found."""

    manifest: Manifest
    files: dict[str, bytes]
    warnings: tuple[Issue, ...]

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.config

    @property
    def package_hash(self) -> str:
        return self.manifest.package_hash


def parse_config(data: bytes) -> tuple[Any, list[Issue]]:
    try:
        return json.loads(data.decode("utf-8")), []
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [error(CONFIG, f"is not valid JSON: {exc}")]


def check_contents(config: Any, files: Mapping[str, bytes]) -> list[Issue]:
    """Config rules, the declaration, the WASM binaries and the declared tables and parameters,
    all at once; ``files`` are the assets by path."""
    issues = validate_config(config, files.keys())
    if not isinstance(config, dict):
        return issues
    if not any(i.where.startswith("$.pipeline") and i.severity == "error" for i in issues):
        issues += check_pipeline_binaries(config, files)
    interface, _ = parse_interface(config.get("interface"))
    if interface is not None:
        # tables and parameters from an Assumptions Manager (am://) are judged when a run fetches them
        local = dataclasses.replace(
            interface,
            tables=tuple(t for t in interface.tables if not t.file.startswith(AM)),
            parameters=tuple(p for p in interface.parameters if not (p.file or "").startswith(AM)),
        )
        issues += asset_issues(local, files.get)
    return issues


def verify_archive(data: bytes, limits: PackageLimits | None = None) -> Package:
    """Unpack and verify a package archive; `PackageInvalid` lists every problem."""
    files = read_archive(data, limits)
    issues: list[Issue] = []
    if MANIFEST not in files:
        issues.append(error(MANIFEST, "is missing"))
    if CONFIG not in files:
        issues.append(error(CONFIG, "is missing"))
    for path in files:
        if path not in (MANIFEST, CONFIG) and asset_type(path) is None:
            issues.append(
                error(path, "is not where a package may hold files (wasm/*.wasm, assumptions/, python/, data/)")
            )
    if issues:
        raise PackageInvalid(issues)
    manifest, problems = parse_manifest(files[MANIFEST])
    raise_on_errors(problems)
    assert manifest is not None
    config, problems = parse_config(files[CONFIG])
    raise_on_errors(problems)
    if config != manifest.config:
        issues.append(error(CONFIG, "differs from the manifest's config"))
    assets = {p: d for p, d in files.items() if p not in (MANIFEST, CONFIG)}
    listed = {a.path: a for a in manifest.assets}
    issues += [error(p, "is in the archive but not in the manifest") for p in sorted(assets.keys() - listed.keys())]
    issues += [error(p, "is in the manifest but not in the archive") for p in sorted(listed.keys() - assets.keys())]
    for path in sorted(assets.keys() & listed.keys()):
        data_ = assets[path]
        if len(data_) != listed[path].size or hashlib.sha256(data_).hexdigest() != listed[path].sha256:
            issues.append(error(path, "does not match the size and SHA-256 the manifest lists"))
    if manifest.computed_hash() != manifest.package_hash:
        issues.append(error(f"{MANIFEST}:$.packageHash", "does not match the manifest's version, assets and config"))
    if issues:
        raise PackageInvalid(issues)
    warnings = raise_on_errors(check_contents(config, assets))
    return Package(manifest, assets, tuple(warnings))


# ---------------------------------------------------------------------------
# Building from a directory


AUTHOR_FILES: Final = ("src/", "README.md")
"""Paths of a package directory that are the author's, never packed: the C sources that
``livecalc package build`` compiles into ``wasm/`` and the directory's README."""


def _authors(rel: str) -> bool:
    return any(rel.startswith(p) if p.endswith("/") else rel == p for p in AUTHOR_FILES)


def read_directory(root: Path) -> tuple[Any, dict[str, bytes], list[Issue], float]:
    """The config, the asset files and the problems of an author's package directory.

    Hidden files and folders (``.git``, ``.DS_Store``), a stale ``manifest.json`` and the
    author's files (`AUTHOR_FILES`) are skipped; symbolic links and files outside the package
    folders are errors. Also returns the newest modification time, the default ``createdAt``.
    """
    if not root.is_dir():
        raise PackageInvalid([error(str(root), "is not a directory")])
    issues: list[Issue] = []
    files: dict[str, bytes] = {}
    config: Any = None
    newest = 0.0
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")) or rel == MANIFEST or _authors(rel):
            continue
        if path.is_symlink():
            issues.append(error(rel, "is a symbolic link; packages hold regular files only"))
            continue
        if path.is_dir():
            continue
        newest = max(newest, path.stat().st_mtime)
        if rel == CONFIG:
            config, problems = parse_config(path.read_bytes())
            issues += problems
        elif asset_type(rel) is None:
            issues.append(
                error(rel, "is not where a package may hold files (wasm/*.wasm, assumptions/, python/, data/)")
            )
        else:
            files[rel] = path.read_bytes()
    if config is None and not issues:
        issues.append(error(CONFIG, "is missing"))
    return config, files, issues, newest


def check_directory(root: Path) -> list[Issue]:
    """Every error and warning of a package directory."""
    config, files, issues, _ = read_directory(root)
    if any(i.severity == "error" for i in issues):
        return issues
    return issues + check_contents(config, files)


def utc_stamp(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_directory(root: Path, *, source_date_epoch: int | None = None) -> tuple[bytes, Package]:
    """The archive of a valid package directory, and the package it holds.

    ``createdAt`` is ``source_date_epoch`` when given (the reproducible-builds convention),
    else the newest file's modification time: building the same directory twice gives the
    same bytes, and copying it elsewhere changes at most ``createdAt``, never the packageHash.
    """
    config, assets, issues, newest = read_directory(root)
    raise_on_errors(issues)
    warnings = raise_on_errors(issues + check_contents(config, assets))
    stamp = utc_stamp(source_date_epoch if source_date_epoch is not None else newest)
    manifest = make_manifest(assets, config, stamp)
    entries = {**assets, CONFIG: (root / CONFIG).read_bytes(), MANIFEST: manifest.to_bytes()}
    return write_archive(entries), Package(manifest, assets, tuple(warnings))
