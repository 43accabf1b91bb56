"""The models and sources the engine ships as package data (``services/engine/assets/models``).

Read through `importlib.resources`, so they are found in a wheel or a container install as
well as in a checkout; ``make wasm`` (models/build.py) writes them from ``models/``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path


def _models() -> Traversable:
    return resources.files("services.engine") / "assets" / "models"


def shipped_models() -> dict[str, bytes]:
    """The committed WASM builds of the shipped models, name → bytes."""
    found = sorted((t for t in _models().iterdir() if t.name.endswith(".wasm")), key=lambda t: t.name)
    return {t.name.removesuffix(".wasm"): t.read_bytes() for t in found}


@contextlib.contextmanager
def model_sources() -> Iterator[Path]:
    """A directory holding the models' C sources and ``include/livecalc_model.h`` (native builds)."""
    with resources.as_file(_models() / "src") as path:
        yield path
