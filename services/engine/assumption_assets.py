"""Assumption asset files on disk, and lifelib's sample assumptions.

A model package carries its assumptions as files under ``assumptions/``; their format is
parsed and written by `services.valuation.assumption_files` (one definition for the engine,
the gateway and the CLI). This module writes and loads them in a directory and builds lifelib
basiclife BasicTerm_S's sample assumptions, from which the shipped reference package is built.

Asset format (files under ``assumptions/`` in a model package; UTF-8, ``\\n`` line ends;
floats are written with Python's ``repr`` so they round-trip exactly):

``mortality.csv``
    header ``age,0,1,…,S``; one row per attained age, ages consecutive and ascending; the
    columns are annual q by select duration 0..S, the last column is ultimate.
``lapse.csv``
    header ``year,rate``; years 0, 1, … consecutive; annual lapse rate; the last rate is
    carried forward.
``curve.csv``
    header ``year,rate``; years 0, 1, … consecutive; annual zero-spot rate z[k].
``expenses.json``
    ``{"acquisition": 300, "maintenance": 60, "inflation": 0.01, "commission_rate": 1.0,
    "premium_loading": 0.5}`` — acquisition per new policy, maintenance per policy per year,
    annual expense inflation, commission rate on year-0 premiums, premium loading.
``options.json`` (optional)
    ``{"female_multiplier": 1.0, "dynamic_lapse": {"beta": 0.0, "lo": 0.5, "hi": 2.0}}``;
    missing keys take these defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from services.valuation.assumption_files import ASSET_FILES, assumption_files, assumptions_from_files
from services.valuation.assumptions import Assumptions
from services.valuation.reference_model import assumptions_dir, shipped_assumption_files


def write_assumptions(assumptions: Assumptions, directory: Path) -> list[Path]:
    """Write the asset files into ``directory`` (created if needed); returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in assumption_files(assumptions).items():
        path = directory / name
        path.write_bytes(data)
        written.append(path)
    return written


def load_assumptions(directory: Path) -> Assumptions:
    """Read the asset files from ``directory`` (a package's unpacked ``assumptions/`` folder)."""
    files = {name: (directory / name).read_bytes() for name in ASSET_FILES if (directory / name).is_file()}
    return assumptions_from_files(files)


# ---------------------------------------------------------------------------
# lifelib's sample assumptions


def lifelib_model_dir(model: str = "BasicTerm_S") -> Path:
    """The installed lifelib's ``libraries/basiclife/<model>`` folder (needs the lifelib package)."""
    import lifelib  # noqa: PLC0415  # lazily: lifelib is a development dependency

    return Path(lifelib.__file__).parent / "libraries" / "basiclife" / model


def lifelib_sample_assumptions() -> Assumptions:
    """lifelib basiclife BasicTerm_S's sample assumptions, read from the installed lifelib.

    Mortality (ages 18..120, S = 5) and the discount curve come from the model's own
    ``mort_table.xlsx`` and ``disc_rate_ann.xlsx``; the scalar assumptions are the model's
    formulas: lapse max(0.1 − 0.02·y, 0.02), acquisition 300, maintenance 60, inflation 0.01,
    commission 100% of year-0 premiums, loading 0.5. Needs lifelib, pandas and openpyxl.
    """
    import pandas as pd  # type: ignore[import-untyped]  # noqa: PLC0415  # lazily: a development dependency

    folder = lifelib_model_dir("BasicTerm_S")
    mort = pd.read_excel(folder / "mort_table.xlsx", index_col=0)
    ages = [int(a) for a in mort.index]
    if ages != list(range(ages[0], ages[0] + len(ages))):
        raise ValueError("lifelib's mort_table ages are not consecutive")
    mort = mort[sorted(mort.columns, key=int)]
    disc = pd.read_excel(folder / "disc_rate_ann.xlsx", index_col=0)
    years = [int(y) for y in disc.index]
    if years != list(range(len(years))):
        raise ValueError("lifelib's disc_rate_ann years do not run 0, 1, …")
    # lapse max(0.1 − 0.02·y, 0.02) in floats: y = 4 gives 0.020000000000000004, y ≥ 5 gives 0.02,
    # which is then carried forward
    lapse = [max(0.1 - 0.02 * y, 0.02) for y in range(6)]
    return Assumptions(
        mortality=mort.to_numpy(dtype=np.float64),
        mortality_min_age=ages[0],
        lapse=np.array(lapse),
        expense_acq=300.0,
        expense_maint=60.0,
        inflation=0.01,
        commission_rate=1.0,
        premium_loading=0.5,
        curve=disc.iloc[:, 0].to_numpy(dtype=np.float64),
    )


# ---------------------------------------------------------------------------
# The shipped copy: lifelib's sample assumptions as asset files, for machines without lifelib


def shipped_assumptions() -> Assumptions:
    """The reference package's assumptions (lifelib's sample ones), read from the shipped files
    (`services.valuation.reference_model`, generated by ``main()`` below; a test fails when stale)."""
    return assumptions_from_files(shipped_assumption_files())


def main(argv: list[str] | None = None) -> int:
    """Regenerate the shipped asset files from lifelib: ``python -m services.engine.assumption_assets``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, help="folder to write the files into (default: the shipped ones)")
    args = parser.parse_args(argv)
    with assumptions_dir() as shipped:
        for path in write_assumptions(lifelib_sample_assumptions(), args.out or shipped):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
