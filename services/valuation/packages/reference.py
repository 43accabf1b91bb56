"""The reference model package: esg → term_life with lifelib's sample assumptions.

``livecalc package init DIR`` writes it as an editable directory. Its parts are files the
repository ships: the WASM builds (``models/wasm``, built by ``make wasm``; built on the spot
with models/build.py when absent) and the assumption assets the engine ships
(lifelib basiclife BasicTerm_S's sample tables). They are read as data files, not imported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from services.common.errors import FailedPrecondition
from services.valuation.packages.config import REFERENCE_PIPELINE
from services.valuation.packages.manifest import CONFIG

REPO: Final = Path(__file__).resolve().parents[3]
WASM_DIR: Final = REPO / "models" / "wasm"
ASSUMPTIONS_DIR: Final = REPO / "services" / "engine" / "assets" / "basic_term_s" / "assumptions"
MODELS: Final = ("esg", "term_life")


def reference_config() -> dict[str, Any]:
    """The reference ``livecalc.config.json`` (docs/packages.md shows it)."""
    return {
        "name": "term-life-reference",
        "version": "1.0.0",
        "description": "Stochastic term life (MODEL.md) on lifelib basiclife's sample assumptions",
        "model": "term_life",
        "assumptions": {
            "mortality": "assumptions/mortality.csv",
            "lapse": "assumptions/lapse.csv",
            "expenses": "assumptions/expenses.json",
            "curve": "assumptions/curve.csv",
            "options": "assumptions/options.json",
        },
        "scenarios": {"count": 1000, "seed": 42, "a": 0.1, "sigma": 0.01, "include_base": True},
        "pipeline": [dict(node) for node in REFERENCE_PIPELINE],
    }


def config_bytes(config: dict[str, Any]) -> bytes:
    return (json.dumps(config, indent=2) + "\n").encode("utf-8")


def shipped_wasm() -> dict[str, bytes]:
    """The shipped models' WASM (name → bytes), built reproducibly when ``make wasm`` has not run."""
    if all((WASM_DIR / f"{m}.wasm").is_file() for m in MODELS):
        return {m: (WASM_DIR / f"{m}.wasm").read_bytes() for m in MODELS}
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, str(REPO / "models" / "build.py"), "--out", tmp],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not all((Path(tmp) / f"{m}.wasm").is_file() for m in MODELS):
            raise FailedPrecondition(f"the shipped WASM models are not built and building them failed: {done.stderr}")
        return {m: (Path(tmp) / f"{m}.wasm").read_bytes() for m in MODELS}


def init_directory(dest: Path) -> list[Path]:
    """Write the reference package into ``dest`` (which must be empty or absent)."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FailedPrecondition(f"{dest} exists and is not an empty directory")
    (dest / "wasm").mkdir(parents=True, exist_ok=True)
    (dest / "assumptions").mkdir(exist_ok=True)
    written = [dest / CONFIG]
    written[0].write_bytes(config_bytes(reference_config()))
    for name, data in shipped_wasm().items():
        path = dest / "wasm" / f"{name}.wasm"
        path.write_bytes(data)
        written.append(path)
    for source in sorted(ASSUMPTIONS_DIR.iterdir()):
        path = dest / "assumptions" / source.name
        shutil.copyfile(source, path)
        written.append(path)
    return written
