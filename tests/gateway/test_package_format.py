"""The package format without servers: reproducible builds, hashes, and every refusal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from services.valuation.packages.canonical import canonical_json, package_hash
from services.valuation.packages.package import build_directory, check_directory, verify_archive
from services.valuation.packages.report import PackageInvalid
from tests.gateway import archives


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": [1, 2.5], "a": "é"}) == '{"a":"é","b":[1,2.5]}'.encode()


def test_package_hash_ignores_asset_order() -> None:
    a = [{"path": "wasm/a.wasm", "sha256": "0" * 64, "size": 1, "type": "wasm"}]
    b = [{"path": "assumptions/x.csv", "sha256": "1" * 64, "size": 2, "type": "assumption"}]
    assert package_hash(1, a + b, {"k": 1}) == package_hash(1, b + a, {"k": 1})
    assert package_hash(1, a + b, {"k": 1}) != package_hash(1, a + b, {"k": 2})


def test_build_twice_is_byte_identical_and_verifies(tmp_path: Path) -> None:
    first, package = build_directory(archives.reference_dir())
    second, _ = build_directory(archives.reference_dir())
    assert first == second
    copy = tmp_path / "copy"
    shutil.copytree(archives.reference_dir(), copy)
    _third, moved = build_directory(copy, source_date_epoch=0)
    assert moved.package_hash == package.package_hash  # createdAt differs, the identity does not
    verified = verify_archive(first)
    assert verified.package_hash == package.package_hash
    assert verified.manifest.to_bytes() == package.manifest.to_bytes()
    assert verified.warnings == ()


def test_reference_manifest_has_no_absolute_paths() -> None:
    _archive, package = build_directory(archives.reference_dir())
    text = package.manifest.to_bytes().decode()
    assert str(archives.reference_dir()) not in text
    assert sorted(json.loads(text)) == ["assets", "config", "createdAt", "packageHash", "version"]


@pytest.mark.parametrize(("case", "archive", "names"), archives.cases(), ids=[c[0] for c in archives.cases()])
def test_hostile_or_broken_archive_is_refused(case: str, archive: bytes, names: str) -> None:
    with pytest.raises(PackageInvalid) as caught:
        verify_archive(archive)
    assert names in caught.value.details(), caught.value.details()


def test_directory_reports_every_problem_at_once(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    shutil.copytree(archives.reference_dir(), root)
    config = json.loads((root / "livecalc.config.json").read_text())
    config["scenarios"]["count"] = 0
    config["pipeline"][1]["id"] = "esg"
    interface = config["interface"]
    interface["tables"][0]["axes"][0]["size"] = 99  # the file has ages 18..120: 103 rows
    interface["tables"][1]["file"] = "am://lapse/v3"
    interface["policy"]["rules"][0]["check"] = "age_at_entry + term_years <= 121"
    (root / "livecalc.config.json").write_text(json.dumps(config))
    (root / "assumptions" / "expenses.json").write_text('{"acquisition": 300}')
    (root / "notes.txt").write_text("stray")
    found = check_directory(root)
    wheres = {(i.severity, i.where) for i in found}
    assert ("error", "notes.txt") in wheres
    (root / "notes.txt").unlink()
    found = check_directory(root)
    wheres = {(i.severity, i.where) for i in found}
    assert {
        ("error", "$.scenarios.count"),
        ("error", "$.pipeline[1].id"),
        ("error", "$.interface.policy.rules[0].check"),
        ("warning", "$.interface.tables[1].file"),
    } <= wheres, wheres
    # the tables and parameters are judged too, in the same round (the declaration itself is broken,
    # so they are judged against what of it could be read)
    messages = " ".join(f"{i.where}: {i.message}" for i in found)
    assert "assumptions/expenses.json" in messages and "maintenance" in messages, messages
    assert "assumptions/mortality.csv" in messages and "99" in messages, messages
