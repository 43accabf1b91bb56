"""Build the shipped WASM models from C with the PyPI ``ziglang`` toolchain (``make wasm``).

Each model is one C file compiled to a wasm32 reactor module that imports the shared memory
``env.memory`` and nothing else (no WASI: the engine's sandbox refuses any other import).

The compile itself (target, flags, the shared-memory flip after linking: wasm-ld's
``--shared-memory`` start function waits on an atomic, which the sandbox refuses) is
``services.valuation.sdk.build``, the same one ``livecalc package build`` uses for an author's
model; this script knows only which shipped model is built from which source at which base.

The C sources (``src/``, also the native baseline of ``livecalc bench engine``) and the builds
are package data under ``services/valuation/reference_model/models/``, so a wheel carries them.
Every model gets its own static-data address (``--global-base``) so that several models can
import the same memory without their data overlapping; the host places its buffers above
the highest ``__heap_base``. The output is reproducible: ``tests/engine/test_wasm_build.py``
rebuilds into a temporary directory and compares SHA-256 with the committed binaries.

A projection's C reads its inputs through ``src/include/[<dir>/]model_interface.h``, generated from its
declared interface (``services/valuation/reference_model/<name>.interface.json``) by
``services.valuation.sdk.c_header``; a build regenerates it first, ``--check`` only compares.

Usage: ``python models/build.py [--out DIR] [--check]``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
ROOT = MODELS_DIR.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from services.valuation.sdk.build import STATIC_SLOT, compile_command, compile_wasm  # noqa: E402 (needs ROOT)

REFERENCE_DIR = ROOT / "services" / "valuation" / "reference_model"
WASM_DIR = REFERENCE_DIR / "models"
SOURCE_DIR = WASM_DIR / "src"
"""The C sources, kept once, as package data: an installed engine builds its native baseline from them."""
INCLUDE_DIR = SOURCE_DIR / "include"


@dataclass(frozen=True)
class ModelSource:
    """One model: its C source, the address of its static data in the shared memory and, for a
    projection, its declared interface and where its generated ``model_interface.h`` lies under
    ``include/`` (``header_dir``: the models share ``include/``, so a second projection's header
    lives in a folder of its own and its C includes ``"<header_dir>/model_interface.h"``)."""

    name: str
    global_base: int
    interface: Path | None = None
    header_dir: str = ""

    @property
    def source(self) -> Path:
        return SOURCE_DIR / f"{self.name}.c"

    @property
    def header(self) -> Path:
        return INCLUDE_DIR / self.header_dir / "model_interface.h"


MODELS = (
    ModelSource("esg", global_base=1 * STATIC_SLOT),
    ModelSource("term_life", global_base=2 * STATIC_SLOT, interface=REFERENCE_DIR / "term_life.interface.json"),
    ModelSource("normals", global_base=3 * STATIC_SLOT),
    ModelSource(
        "savings", global_base=4 * STATIC_SLOT, interface=REFERENCE_DIR / "savings.interface.json", header_dir="savings"
    ),
)


def wasm_command(model: ModelSource, out: Path) -> list[str]:
    """The compiler command line that builds ``model`` into ``out`` (run in ``SOURCE_DIR``)."""
    return compile_command([model.source.name], out, global_base=model.global_base, include_dirs=[INCLUDE_DIR.name])


def stale_headers(*, write: bool) -> list[Path]:
    """Headers that differ from a fresh rendering of their declaration (rewritten when ``write``)."""
    from services.valuation.sdk.c_header import load_interface, render_header  # noqa: PLC0415 (numpy on demand)

    stale = []
    for model in MODELS:
        if model.interface is None:
            continue
        text = render_header(load_interface(model.interface))
        if not model.header.exists() or model.header.read_text(encoding="utf-8") != text:
            stale.append(model.header)
            if write:
                model.header.parent.mkdir(exist_ok=True)
                model.header.write_text(text, encoding="utf-8")
    return stale


def build(out_dir: Path = WASM_DIR) -> dict[str, Path]:
    """Compile every model into ``out_dir``/<name>.wasm; returns name → path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path] = {}
    for model in MODELS:
        out = out_dir / f"{model.name}.wasm"
        wasm, messages = compile_wasm(
            [model.source.name], cwd=SOURCE_DIR, global_base=model.global_base, include_dirs=[INCLUDE_DIR.name]
        )
        if messages:
            print(messages, file=sys.stderr)
        out.write_bytes(wasm)
        built[model.name] = out
    return built


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default services/valuation/reference_model/models; with --check a temporary one)",
    )
    parser.add_argument("--check", action="store_true", help="build into --out and compare with the committed builds")
    args = parser.parse_args(argv)
    headers = stale_headers(write=not args.check)
    with tempfile.TemporaryDirectory(prefix="livecalc-wasm-check-") as scratch:
        # a check must never build over the committed models it compares with
        out = args.out or (Path(scratch) if args.check else WASM_DIR)
        return _build_and_compare(out, check=args.check, headers=headers)


def _build_and_compare(out_dir: Path, *, check: bool, headers: list[Path]) -> int:
    built = build(out_dir)
    stale = []
    for name, path in built.items():
        digest = sha256(path)
        print(f"{name}: {path} sha256={digest}")
        committed = WASM_DIR / f"{name}.wasm"
        if check and (not committed.exists() or sha256(committed) != digest):
            stale.append(name)
    if check and headers:
        print(f"stale generated headers (run `make wasm`): {', '.join(map(str, headers))}", file=sys.stderr)
    if check and stale:
        print(f"stale committed models (run `make wasm`): {', '.join(stale)}", file=sys.stderr)
    return 1 if check and (headers or stale) else 0


if __name__ == "__main__":
    raise SystemExit(main())
