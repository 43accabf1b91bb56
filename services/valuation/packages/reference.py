"""The reference model package: esg → term_life with lifelib's sample assumptions.

``livecalc package init DIR`` writes it as an editable directory from the shipped reference
model (`services.valuation.reference_model`, package data): its WASM builds and lifelib
basiclife BasicTerm_S's sample assumption tables. ``--model savings`` writes the second product
the same way: normals → savings with lifelib savings CashValue_ME's assumptions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from services.common.errors import FailedPrecondition
from services.valuation.packages.config import REFERENCE_PIPELINE
from services.valuation.packages.manifest import CONFIG
from services.valuation.reference_model import (
    savings_assumption_files,
    savings_declaration,
    shipped_assumption_files,
    shipped_models,
    term_life_declaration,
)

MODELS: Final = ("esg", "term_life")
SAVINGS_MODELS: Final = ("normals", "savings")
SAVINGS_PIPELINE: Final = (
    {"id": "normals", "engine": "wasm://normals", "inputs": ["$scenarios"], "outputs": ["bus://std_norm"]},
    {
        "id": "savings",
        "engine": "wasm://savings",
        "inputs": ["$policies", "$assumptions", "bus://std_norm"],
        "outputs": ["bus://pv"],
    },
)
"""normals → savings: standard normal draws Z_s(t) into the savings projection (its assumptions are
the files of `services.valuation.reference_model.savings_assumption_files`, under ``assumptions/``)."""


def reference_config() -> dict[str, Any]:
    """The reference ``livecalc.config.json`` (docs/packages.md shows it)."""
    return {
        "name": "term-life-reference",
        "version": "2.0.0",
        "description": "Stochastic term life (lifelib basiclife BasicTerm_S/SE/ME) on lifelib's sample assumptions",
        "model": "term_life",
        "interface": term_life_declaration(),
        "scenarios": {"count": 1000, "seed": 42, "a": 0.1, "sigma": 0.01, "include_base": True},
        "pipeline": [dict(node) for node in REFERENCE_PIPELINE],
    }


def savings_config() -> dict[str, Any]:
    """The savings package's ``livecalc.config.json``: lifelib savings CashValue_ME (docs/model.md
    "savings") on its own assumptions, under 1,000 scenarios of the normals generator."""
    return {
        "name": "savings-reference",
        "version": "1.0.0",
        "description": "Savings with an account value (lifelib savings CashValue_ME) under stochastic returns",
        "model": "savings",
        "interface": savings_declaration(),
        "scenarios": {"count": 1000, "seed": 42, "include_base": False},
        "pipeline": [dict(node) for node in SAVINGS_PIPELINE],
    }


def config_bytes(config: dict[str, Any]) -> bytes:
    return (json.dumps(config, indent=2) + "\n").encode("utf-8")


REFERENCE_PACKAGES: Final = ("term_life", "savings")
"""``livecalc package init --model``: the shipped reference packages."""


def init_directory(dest: Path, model: str = "term_life") -> list[Path]:
    """Write the reference package of ``model`` (`REFERENCE_PACKAGES`: term life, esg → term_life,
    or savings, normals → savings) into ``dest`` (which must be empty or absent)."""
    if model not in REFERENCE_PACKAGES:
        raise FailedPrecondition(f"no reference package for {model!r}: {', '.join(REFERENCE_PACKAGES)}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FailedPrecondition(f"{dest} exists and is not an empty directory")
    savings = model == "savings"
    config = savings_config() if savings else reference_config()
    assets = savings_assumption_files() if savings else shipped_assumption_files()
    (dest / "wasm").mkdir(parents=True, exist_ok=True)
    (dest / "assumptions").mkdir(exist_ok=True)
    written = [dest / CONFIG]
    written[0].write_bytes(config_bytes(config))
    wasm = shipped_models()
    for name in SAVINGS_MODELS if savings else MODELS:
        path = dest / "wasm" / f"{name}.wasm"
        path.write_bytes(wasm[name])
        written.append(path)
    for name, data in assets.items():
        path = dest / "assumptions" / name
        path.write_bytes(data)
        written.append(path)
    return written
