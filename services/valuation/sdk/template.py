"""``livecalc package init NAME --template c``: an editable C model an actuary starts from.

The template (package data under ``templates/c/``) is a small regular-premium endowment:
its declaration (``livecalc.config.json``), ``src/model.c`` reading it through the generated
accessors, its assumptions and a README that says how to edit, build, validate, upload and
run it. `init_c_template` copies it and adds what is generated or shipped: the generic ABI
header ``src/include/livecalc_model.h`` (the shipped copy), ``src/include/model_interface.h``
(from the declaration), the shipped scenario generator ``wasm/esg.wasm``, a seeded sample
portfolio ``data/sample_policies.csv`` (`sample_policies`) and, when the ``ziglang`` compiler
is installed, ``wasm/model.wasm`` built from ``src/`` (`services.valuation.sdk.build`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final

import numpy as np

from services.common.errors import FailedPrecondition
from services.valuation.packages.manifest import CONFIG
from services.valuation.reference_model import model_sources, shipped_models
from services.valuation.sdk.build import ModelBuild, build_model, compiler_available

TEMPLATES: Final = ("reference", "c")
"""``package init --template``: the shipped term-life package, or the C template."""
SAMPLE: Final = "data/sample_policies.csv"
SAMPLE_ROWS: Final = 3000
SAMPLE_SEED: Final = 20240601
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TEMPLATE_NAME: Final = b'"name": "endowment"'


@dataclass(frozen=True)
class Initialised:
    """What `init_c_template` wrote, and the model build (None when no compiler is installed)."""

    files: tuple[Path, ...]
    build: ModelBuild | None


def _template() -> Traversable:
    return resources.files(__package__ or "services.valuation.sdk") / "templates" / "c"


def _files(root: Traversable, prefix: str = "") -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for item in sorted(root.iterdir(), key=lambda t: t.name):
        if item.name.startswith((".", "__")):
            continue
        if item.is_dir():
            out += _files(item, f"{prefix}{item.name}/")
        else:
            out.append((prefix + item.name, item.read_bytes()))
    return out


def sample_policies(rows: int = SAMPLE_ROWS, seed: int = SAMPLE_SEED) -> str:
    """A seeded endowment portfolio as CSV text: ages at entry 20–60, terms 5–30 years, a third
    new business (duration 0), sums assured 10,000–300,000 and a monthly premium near
    sum_assured / (12·term)."""
    rng = np.random.default_rng(seed)
    age = rng.integers(20, 61, rows)
    term = rng.integers(5, 31, rows)
    sex = rng.choice(np.array(["M", "F"]), rows)
    in_force = rng.random(rows) >= 1 / 3
    duration = np.where(in_force, (rng.random(rows) * 12 * term).astype(np.int64), 0)
    sum_assured = np.round(rng.uniform(10_000, 300_000, rows), -3)
    premium = np.round(sum_assured / (12 * term) * rng.uniform(0.95, 1.15, rows), 2)
    count = rng.choice(np.array([1.0, 1.0, 1.0, 1.0, 2.0, 5.0]), rows)
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(["policy_id", "age_at_entry", "sex", "policy_term", "duration_mth", "sum_assured", "premium_pp",
                "policy_count"])  # fmt: skip
    for i in range(rows):
        w.writerow([i + 1, int(age[i]), str(sex[i]), int(term[i]), int(duration[i]), repr(float(sum_assured[i])),
                    repr(float(premium[i])), repr(float(count[i]))])  # fmt: skip
    return text.getvalue()


def init_c_template(dest: Path, *, build: bool = True) -> Initialised:
    """Write the C template into ``dest`` (empty or absent); its config's name is ``dest``'s name
    when that is a valid package name. Builds ``wasm/model.wasm`` when ``build`` and a compiler is
    installed (otherwise ``livecalc package build`` does, later)."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FailedPrecondition(f"{dest} exists and is not an empty directory")
    written: list[Path] = []

    def put(rel: str, data: bytes) -> None:
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)

    name = dest.resolve().name
    for rel, data in _files(_template()):
        if rel == CONFIG and _NAME.fullmatch(name):
            # the first "name" is the package's; the file's layout stays as written
            named = data.replace(_TEMPLATE_NAME, f'"name": "{name}"'.encode(), 1)
            assert json.loads(named)["name"] == name
            put(rel, named)
        else:
            put(rel, data)
    with model_sources() as shipped:
        put("src/include/livecalc_model.h", (shipped / "include" / "livecalc_model.h").read_bytes())
    put("wasm/esg.wasm", shipped_models()["esg"])
    put(SAMPLE, sample_policies().encode("utf-8"))
    made = build_model(dest) if build and compiler_available() else None
    if made is not None:
        written += [dest / "src" / "include" / "model_interface.h", made.path]
    else:
        from services.valuation.sdk.c_header import load_interface, write_header  # noqa: PLC0415

        write_header(load_interface(dest / CONFIG), dest / "src" / "include" / "model_interface.h")
        written.append(dest / "src" / "include" / "model_interface.h")
    return Initialised(tuple(sorted(written)), made)
