"""Hostile and broken package archives, built from the reference package (one table, two tiers).

Each case is (id, archive bytes, text the refusal must contain). The format tests feed them to
`verify_archive`; the gateway tests upload them and expect INVALID_ARGUMENT and nothing stored.
"""

from __future__ import annotations

import copy
import io
import json
import stat
import warnings
import zipfile
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import wasmtime

from services.valuation.packages.archive import FIXED_TIME, write_archive
from services.valuation.packages.manifest import CONFIG, MANIFEST, make_manifest
from services.valuation.packages.package import build_directory, read_directory
from services.valuation.packages.reference import init_directory

Files = dict[str, bytes]


@cache
def reference_dir() -> Path:
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="livecalc-ref-")) / "pkg"
    init_directory(root)
    return root


@cache
def reference_archive() -> bytes:
    return build_directory(reference_dir(), source_date_epoch=0)[0]


def reference_parts() -> tuple[dict[str, Any], Files]:
    config, files, _, _ = read_directory(reference_dir())
    return copy.deepcopy(config), dict(files)


def consistent(config: dict[str, Any], files: Files) -> bytes:
    """A well-formed archive (manifest matching) of possibly bad content."""
    manifest = make_manifest(files, config, "2024-01-01T00:00:00Z")
    return write_archive({**files, CONFIG: json.dumps(config).encode(), MANIFEST: manifest.to_bytes()})


def raw_zip(entries: Sequence[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names warn
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for info, data in entries:
                zf.writestr(info, data)
    return out.getvalue()


def reference_entries() -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(reference_archive())) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def with_config(change: Callable[[dict[str, Any]], None]) -> bytes:
    config, files = reference_parts()
    change(config)
    return consistent(config, files)


def with_files(change: Callable[[Files], None]) -> bytes:
    config, files = reference_parts()
    change(files)
    return consistent(config, files)


def wat(body: str) -> bytes:
    return bytes(wasmtime.wat2wasm(f"(module {body})"))


WASI = '(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))'
MEMORY = '(import "env" "memory" (memory 1 65536 shared))'
ABI = '(func (export "lc_abi_version") (result i32) i32.const 2)'
ESG = '(func (export "lc_prepare_scenarios") (param i32 i32 i32) (result i32) i32.const 0)'
TL = " ".join(
    f'(func (export "{n}") {p} (result i32) i32.const 0)'
    for n, p in [
        ("lc_prepare", "(param i32)"),
        ("lc_prepare_scenarios", "(param i32 i32 i32)"),
        ("lc_run_blocks", "(param i32 i32 i32)"),
    ]
)


def _symlink() -> bytes:
    info = zipfile.ZipInfo("data/link", FIXED_TIME)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return raw_zip([*reference_entries(), (info, b"/etc/passwd")])


def _encrypted() -> bytes:
    """An entry flagged encrypted (general purpose bit 0; zipfile clears it on write, so patch it)."""
    data = bytearray(raw_zip([*reference_entries(), ("data/secret", b"x")]))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("data/secret")
    data[info.header_offset + 6] |= 0x1
    central = data.rfind(b"PK\x01\x02", 0, data.rfind(b"data/secret"))
    data[central + 8] |= 0x1
    return bytes(data)


def _patched_size(size: int, declared: int) -> bytes:
    """An entry of ``size`` zero bytes whose headers claim ``declared`` bytes."""
    data = bytearray(raw_zip([*reference_entries(), ("data/bomb", b"\0" * size)]))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("data/bomb")
    # the uncompressed size sits at offset 22 of the local header and 24 of the central entry
    data[info.header_offset + 22 : info.header_offset + 26] = declared.to_bytes(4, "little")
    central = data.rfind(b"PK\x01\x02", 0, data.rfind(b"data/bomb"))
    data[central + 24 : central + 28] = declared.to_bytes(4, "little")
    return bytes(data)


def _rm(path: str) -> Callable[[Files], None]:
    def apply(files: Files) -> None:
        del files[path]

    return apply


def _cfg(change: Callable[[dict[str, Any]], Any]) -> bytes:
    def apply(config: dict[str, Any]) -> None:
        change(config)

    return with_config(apply)


def _with_both(config: Callable[[dict[str, Any]], Any], change: Callable[[Files], None]) -> bytes:
    cfg, files = reference_parts()
    config(cfg)
    change(files)
    return consistent(cfg, files)


def _set_wasm(esg: bytes, term_life: bytes | None = None) -> Callable[[Files], None]:
    def apply(files: Files) -> None:
        files["wasm/esg.wasm"] = esg
        if term_life is not None:
            files["wasm/term_life.wasm"] = term_life

    return apply


def _missing_listed() -> bytes:
    entries = [(n, d) for n, d in reference_entries() if n != "assumptions/lapse.csv"]
    return raw_zip(entries)


def _unlisted() -> bytes:
    return raw_zip([*reference_entries(), ("data/extra.csv", b"a,b\n")])


def _hash_mismatch() -> bytes:
    return raw_zip([(n, d + b"9,0.1\n" if n == "assumptions/lapse.csv" else d) for n, d in reference_entries()])


def _tampered_hash() -> bytes:
    def patch(name: str, data: bytes) -> bytes:
        if name != MANIFEST:
            return data
        doc = json.loads(data)
        doc["packageHash"] = "0" * 64
        return json.dumps(doc).encode()

    return raw_zip([(n, patch(n, d)) for n, d in reference_entries()])


def _tampered_config() -> bytes:
    def patch(name: str, data: bytes) -> bytes:
        if name not in (MANIFEST,):
            return data
        doc = json.loads(data)
        doc["config"]["scenarios"]["count"] = 7  # the manifest's config no longer matches its hash
        return json.dumps(doc).encode()

    return raw_zip([(n, patch(n, d)) for n, d in reference_entries()])


@cache
def cases() -> list[tuple[str, bytes, str]]:
    """(id, archive, text the refusal names) for every hostile or broken archive."""
    return [
        ("not-a-zip", b"PK\x03\x04 this is not a zip", "not a zip archive"),
        ("zip-slip-dotdot", raw_zip([*reference_entries(), ("../x", b"x")]), "escapes the package"),
        ("zip-slip-absolute", raw_zip([*reference_entries(), ("/etc/x", b"x")]), "absolute path"),
        ("symlink", _symlink(), "symbolic link"),
        ("encrypted", _encrypted(), "encrypted"),
        ("bomb-declared-size", _patched_size(1000, 3 << 30), "declares 3221225472 bytes"),
        ("bomb-ratio", raw_zip([*reference_entries(), ("data/bomb", b"\0" * (2 << 20))]), "expands"),
        ("bomb-lying-header", _patched_size(4 << 20, 100), "data/bomb"),
        (
            "duplicate-entry",
            raw_zip([*reference_entries(), ("assumptions/lapse.csv", b"year,rate\n0,0.1\n")]),
            "appears 2 times",
        ),
        ("file-not-in-manifest", _unlisted(), "not in the manifest"),
        ("manifest-entry-missing", _missing_listed(), "in the manifest but not in the archive"),
        ("asset-hash-mismatch", _hash_mismatch(), "SHA-256"),
        ("tampered-package-hash", _tampered_hash(), "packageHash"),
        ("tampered-manifest-config", _tampered_config(), "packageHash"),
        (
            "no-manifest",
            raw_zip([(n, d) for n, d in reference_entries() if n != MANIFEST]),
            "manifest.json: is missing",
        ),
        ("config-missing-model", _cfg(lambda c: c.pop("model")), "$.model"),
        ("config-missing-interface", _cfg(lambda c: c.pop("interface")), "$.interface"),
        (
            "config-undeclared-column-in-rule",
            _cfg(lambda c: c["interface"]["policy"]["rules"][0].update(check="age_at_entry + term_years <= 121")),
            "'term_years', which is not a declared column",
        ),
        (
            "config-two-primary-outputs",
            _cfg(lambda c: c["interface"]["outputs"][0].update(primary=True)),
            "exactly one output must be primary",
        ),
        (
            "config-scenario-input-not-read",
            _cfg(lambda c: c["interface"]["scenario_inputs"].append({"name": "equity"})),
            "bus://NAME",
        ),
        ("config-scenarios-zero", _cfg(lambda c: c["scenarios"].update(count=0)), "$.scenarios.count"),
        ("config-node-no-id", _cfg(lambda c: c["pipeline"][0].pop("id")), "$.pipeline[0].id"),
        ("config-node-no-outputs", _cfg(lambda c: c["pipeline"][1].pop("outputs")), "$.pipeline[1].outputs"),
        ("config-bad-engine", _cfg(lambda c: c["pipeline"][0].update(engine="docker://esg")), "$.pipeline[0].engine"),
        ("unknown-python-node", _cfg(lambda c: c["pipeline"][0].update(engine="python://evil")), "python://evil"),
        ("wasm-binary-missing", with_files(_rm("wasm/esg.wasm")), "wasm/esg.wasm, which is not in the package"),
        ("duplicate-node-ids", _cfg(lambda c: c["pipeline"][1].update(id="esg")), "duplicate node id"),
        (
            "unresolved-input",
            _cfg(lambda c: c["pipeline"][1].update(inputs=["bus://nowhere"])),
            "not written by any node",
        ),
        (
            "cycle",
            _cfg(lambda c: c["pipeline"][0].update(inputs=["$scenarios", "bus://pv"])),
            "cycle",
        ),
        (
            "wasm-forbidden-import",
            with_files(_set_wasm(wat(f"{WASI} {MEMORY} {ABI} {ESG}"))),
            "wasi_snapshot_preview1.fd_write",
        ),
        ("wasm-not-wasm", with_files(_set_wasm(b"#!/bin/sh\nrm -rf /\n")), "not a WebAssembly module"),
        (
            "wasm-overlapping-static-data",
            with_files(
                _set_wasm(
                    wat(f'{MEMORY} (data (i32.const 4096) "esg statics") {ABI} {ESG}'),
                    wat(f'{MEMORY} (data (i32.const 4100) "term_life statics") {ABI} {TL}'),
                )
            ),
            "overlaps",
        ),
        (
            "assumptions-unparsable",
            with_files(lambda f: f.update({"assumptions/mortality.csv": b"age,0\nx,y\n"})),
            "assumptions/mortality.csv",
        ),
        (
            "assumptions-wrong-table-shape",
            _with_both(
                lambda c: c["interface"]["tables"][0]["axes"][0].update(size=103),
                lambda f: f.update({"assumptions/mortality.csv": b"age,0\n18,0.001\n19,0.002\n"}),
            ),
            "assumptions/mortality.csv",
        ),
        (
            "parameter-key-missing",
            with_files(lambda f: f.update({"assumptions/expenses.json": b'{"acquisition": 300.0}'})),
            "maintenance",
        ),
    ]
