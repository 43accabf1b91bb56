"""The reference models (docs/model.md) as the project ships them: WASM builds, their C sources,
lifelib basiclife BasicTerm_S's sample assumptions as asset files (term life) and lifelib
savings CashValue_ME's (the savings model, ``savings.interface.json``, ``savings_assumptions/``).

Package data read through `importlib.resources`, so a wheel or a container install finds it
as well as a checkout. The engine runs and benchmarks these builds; ``livecalc package init``
writes them (with the assumption files) as the reference model package. ``make wasm``
(models/build.py) builds ``models/*.wasm`` from ``models/src/``;
``python -m services.engine.assumption_assets`` writes ``assumptions/`` from lifelib,
``python -m services.engine.savings_assets`` writes ``savings_assumptions/``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any


def _here() -> Traversable:
    return resources.files(__name__)


def shipped_models() -> dict[str, bytes]:
    """The committed WASM builds of the reference model's nodes, name → bytes."""
    found = sorted((t for t in (_here() / "models").iterdir() if t.name.endswith(".wasm")), key=lambda t: t.name)
    return {t.name.removesuffix(".wasm"): t.read_bytes() for t in found}


def term_life_declaration() -> dict[str, Any]:
    """term_life's declared interface (``livecalc.config.json`` key ``interface``, docs/model-interface.md)."""
    declared: dict[str, Any] = json.loads((_here() / "term_life.interface.json").read_text(encoding="utf-8"))
    return declared


def savings_declaration() -> dict[str, Any]:
    """The savings model's declared interface (lifelib savings CashValue_ME, docs/model.md "savings")."""
    declared: dict[str, Any] = json.loads((_here() / "savings.interface.json").read_text(encoding="utf-8"))
    return declared


def shipped_assumption_files() -> dict[str, bytes]:
    """The reference model's assumption files (``assumptions/*`` of its package), name → bytes."""
    found = sorted((t for t in (_here() / "assumptions").iterdir() if t.is_file()), key=lambda t: t.name)
    return {t.name: t.read_bytes() for t in found}


def savings_assumption_files() -> dict[str, bytes]:
    """The savings model's assumption files (``assumptions/*`` of its package), name → bytes."""
    found = sorted((t for t in (_here() / "savings_assumptions").iterdir() if t.is_file()), key=lambda t: t.name)
    return {t.name: t.read_bytes() for t in found}


@contextlib.contextmanager
def model_sources() -> Iterator[Path]:
    """A directory holding the models' C sources and ``include/livecalc_model.h`` (native builds)."""
    with resources.as_file(_here() / "models" / "src") as path:
        yield path


@contextlib.contextmanager
def assumptions_dir() -> Iterator[Path]:
    """The directory of the shipped assumption files (a real path; for regenerating them in a checkout)."""
    with resources.as_file(_here() / "assumptions") as path:
        yield path


@contextlib.contextmanager
def savings_assumptions_dir() -> Iterator[Path]:
    """The directory of the savings model's shipped assumption files (for regenerating them in a checkout)."""
    with resources.as_file(_here() / "savings_assumptions") as path:
        yield path
