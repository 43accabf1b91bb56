"""lifelib's BasicTerm_ME on its own 10,000 model points: the points, the tables, the PVs — run once, cached.

lifelib is optional (``pip install lifelib``, or the ``lifelib`` extra): `load` says so plainly
when it is missing. It runs lifelib in a child interpreter on numpy's baseline code
(``NPY_DISABLE_CPU_FEATURES`` naming every feature numpy dispatches): with AVX-512, numpy's
vectorized power is not correctly rounded (1 ulp off on 52 of the mortality table's 576
(1 − q)^(1/12)), which moves lifelib's PV of net cash flow by about 1e-12 relative away from the
value with libm's power, which the models' wasi-libc pow equals on every cell. On the baseline
code numpy's power is libm's (`LifelibME.pow_is_libm` records the check), and the mesh equals
lifelib to ~4e-16 (tests/engine/test_lifelib_me_mesh.py tells the whole story).

The child prints one JSON document (floats as Python's repr, so they read back exactly); it is
kept in the cache directory under lifelib's version and read from there next time — also where
lifelib is not installed (a many-core machine lent for a run, say: copy the file there).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from services.common.errors import FailedPrecondition

MODEL: Final = "BasicTerm_ME"
COMPONENTS: Final = ("premiums", "claims", "expenses", "commissions", "net_cf")
"""lifelib's pv_<component> per policy, as the term-life declaration's outputs (net_cf the total)."""
POINT_COLUMNS: Final = ("age_at_entry", "sex", "policy_term", "policy_count", "sum_assured", "duration_mth")
NEEDS: Final = ("lifelib", "modelx", "pandas", "openpyxl")
"""What running BasicTerm_ME takes (modelx reads the model, pandas and openpyxl its tables)."""
INSTALL_HINT: Final = "pip install lifelib modelx pandas openpyxl (or pip install 'livecalc-mesh[lifelib]')"
TIMEOUT_S: Final = 600.0

# Run in the child: lifelib's model, its points and tables, each policy's PVs, and whether
# numpy's power is libm's on every (1 − q) of the mortality table.
_CHILD = """
import json, math, sys
import modelx as mx, numpy as np
model = mx.read_model(sys.argv[1])
try:
    p = model.Projection
    mp = p.model_point_table
    mort = p.mort_table
    mort = mort[sorted(mort.columns, key=int)]
    x = 1.0 - np.minimum(1.0, mort.to_numpy(dtype=np.float64).ravel())
    out = {
        "policy_id": [int(i) for i in mp.index],
        "points": {c: mp[c].tolist() for c in sys.argv[2].split(",")},
        "premium_pp": np.asarray(p.premium_pp(), dtype=np.float64).tolist(),
        "pv": {n: np.asarray(getattr(p, "pv_" + n)(), dtype=np.float64).tolist() for n in sys.argv[3].split(",")},
        "mortality": mort.to_numpy(dtype=np.float64).tolist(),
        "mortality_ages": [int(a) for a in mort.index],
        "curve": p.disc_rate_ann.to_numpy(dtype=np.float64).tolist(),
        "scalars": [float(f()) for f in (p.expense_acq, p.expense_maint, p.inflation_rate, p.loading_prem)],
        "pow_is_libm": bool(np.all(np.power(x, 1.0 / 12.0) == [math.pow(v, 1.0 / 12.0) for v in x])),
    }
finally:
    model.close()
print(json.dumps(out))
"""

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LifelibME:
    """BasicTerm_ME's model points (lifelib's premium per policy given), tables and per-policy PVs."""

    policy_id: npt.NDArray[np.int64]
    points: dict[str, npt.NDArray[Any]]
    """`POINT_COLUMNS` → one value per model point, in lifelib's order."""
    premium_pp: F64
    pv: dict[str, F64]
    """`COMPONENTS` → lifelib's present value per model point."""
    mortality: F64
    mortality_min_age: int
    curve: F64
    scalars: tuple[float, float, float, float]
    """expense_acq, expense_maint, inflation_rate, loading_prem."""
    pow_is_libm: bool
    lifelib_version: str

    def __len__(self) -> int:
        return int(self.policy_id.size)

    def total(self, component: str = "net_cf", points: int | None = None) -> float:
        """The exactly rounded sum (fsum) of the first ``points`` policies' PVs (all by default)."""
        return math.fsum(self.pv[component][:points].tolist())

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LifelibME:
        points: dict[str, npt.NDArray[Any]] = {
            c: np.asarray(doc["points"][c], dtype=str if c == "sex" else None) for c in POINT_COLUMNS
        }
        ages = doc["mortality_ages"]
        if ages != list(range(ages[0], ages[0] + len(ages))):
            raise FailedPrecondition("lifelib's mort_table ages are not consecutive")
        acq, maint, inflation, loading = (float(v) for v in doc["scalars"])
        return cls(
            policy_id=np.asarray(doc["policy_id"], dtype=np.int64),
            points=points,
            premium_pp=np.asarray(doc["premium_pp"], dtype=np.float64),
            pv={n: np.asarray(doc["pv"][n], dtype=np.float64) for n in COMPONENTS},
            mortality=np.asarray(doc["mortality"], dtype=np.float64),
            mortality_min_age=int(ages[0]),
            curve=np.asarray(doc["curve"], dtype=np.float64),
            scalars=(acq, maint, inflation, loading),
            pow_is_libm=bool(doc["pow_is_libm"]),
            lifelib_version=str(doc["lifelib"]),
        )


def missing_packages() -> list[str]:
    """Those of `NEEDS` this interpreter cannot import."""
    return [name for name in NEEDS if importlib.util.find_spec(name) is None]


def _numpy_dispatched_features() -> list[str]:
    """The CPU features numpy dispatches at run time (all disabled: its baseline code)."""
    try:
        umath = importlib.import_module("numpy._core._multiarray_umath")  # numpy ≥ 2
    except ImportError:  # pragma: no cover - numpy 1.x
        umath = importlib.import_module("numpy.core._multiarray_umath")
    return [str(feature) for feature in umath.__cpu_dispatch__]


def run_lifelib() -> dict[str, Any]:
    """lifelib's BasicTerm_ME in a child interpreter on numpy's baseline code; its JSON document."""
    from services.engine.assumption_assets import lifelib_model_dir  # noqa: PLC0415  # imports lifelib

    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(_numpy_dispatched_features())}
    argv = [sys.executable, "-c", _CHILD, str(lifelib_model_dir(MODEL)), ",".join(POINT_COLUMNS), ",".join(COMPONENTS)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise FailedPrecondition(f"lifelib's {MODEL} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def load(cache_dir: Path) -> LifelibME:
    """lifelib's BasicTerm_ME from ``cache_dir``, run (about 15 s) and kept there the first time.

    Without lifelib, a result already in ``cache_dir`` is used (the newest lifelib's), so a
    machine without it can run the benchmark from a copied cache; with neither, `FailedPrecondition`
    with an install hint.
    """
    missing = missing_packages()
    if missing:
        cached = sorted(cache_dir.glob(f"lifelib-*-{MODEL}.json"), key=lambda p: p.stat().st_mtime)
        if cached:
            return LifelibME.from_json(json.loads(cached[-1].read_text(encoding="utf-8")))
        raise FailedPrecondition(
            f"livecalc bench me runs lifelib's {MODEL} and needs {', '.join(missing)}: {INSTALL_HINT}"
            f" (or --cache-dir holding a copy of its results)"
        )
    version = metadata.version("lifelib")
    path = cache_dir / f"lifelib-{version}-{MODEL}.json"
    if path.is_file():
        return LifelibME.from_json(json.loads(path.read_text(encoding="utf-8")))
    doc = {**run_lifelib(), "lifelib": version, "numpy": np.__version__}
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(doc), encoding="utf-8")
    partial.replace(path)  # whole or absent: a run stopped half-way leaves no cache behind
    return LifelibME.from_json(doc)
