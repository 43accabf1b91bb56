"""``livecalc bench me``: lifelib's BasicTerm_ME points ×K through a mesh and in process, against lifelib.

The slow test runs the command itself (real processes: a data service, an engine, a gateway) on
the first 500 of lifelib's points ×2 and checks its JSON: every total equals 2 × lifelib's to
1e-12, every hash is the in-process one, every figure is there. The fast ones check the tiling
and the message when lifelib is missing. Figures are printed, never judged.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services import cli
from services.bench.me import inputs, lifelib_oracle, measure
from services.bench.me.report import active_months
from services.bench.mesh.runs import InProcess
from services.common.errors import FailedPrecondition
from services.data.generate import SCHEMA, generate
from services.engine.assumption_assets import shipped_assumptions
from services.valuation.blocks import BLOCK_SIZE

MULTIPLIER = 2
POINTS = 500


def small_table(rows: int) -> pa.Table:
    columns = {
        "policy_id": np.arange(101, 101 + rows, dtype=np.int64),
        "age_at_entry": np.full(rows, 40, dtype=np.int64),
        "sex": np.array(["M", "F"] * rows)[:rows],
        "policy_term": np.full(rows, 10, dtype=np.int64),
        "policy_count": np.arange(rows, dtype=np.float64),
        "sum_assured": np.linspace(1e4, 1e6, rows),
        "duration_mth": np.arange(rows, dtype=np.int64) - 3,
        "premium_pp": np.linspace(10.0, 20.0, rows),
    }
    return pa.Table.from_arrays([pa.array(columns[f.name], type=f.type) for f in SCHEMA], schema=SCHEMA)


@pytest.mark.parametrize("rows_per_write", [inputs.ROWS_PER_WRITE, 14])
def test_tiling_repeats_the_points_and_renumbers_the_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows_per_write: int
) -> None:
    """Copies written several at a time, the last write short (14 rows a write: 2 copies of 5 rows, 7 copies in all)."""
    monkeypatch.setattr(inputs, "ROWS_PER_WRITE", rows_per_write)
    base = small_table(5)
    path = tmp_path / "tiled.parquet"
    assert inputs.write_tiled(path, base, 7) == 35
    tiled = pq.read_table(path)
    assert tiled.schema.equals(SCHEMA)
    np.testing.assert_array_equal(tiled.column("policy_id").to_numpy(), np.arange(1, 36))
    for name in SCHEMA.names[1:]:
        assert tiled.column(name).to_pylist() == base.column(name).to_pylist() * 7, name
    assert not list(tmp_path.glob(".*partial"))


def test_without_lifelib_the_command_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(lifelib_oracle, "missing_packages", lambda: ["lifelib", "modelx"])
    with pytest.raises(FailedPrecondition, match="pip install lifelib"):
        lifelib_oracle.load(tmp_path)
    code = cli.main(["bench", "me", "--cache-dir", str(tmp_path), "--dir", str(tmp_path / "scratch")])
    err = capsys.readouterr().err
    assert code != 0
    assert "needs lifelib, modelx" in err and "pip install lifelib" in err
    assert "--cache-dir" in err
    assert not (tmp_path / "scratch" / "datasets").exists()  # nothing started nor written


def test_the_in_process_run_in_pieces_is_the_run_in_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces of whole blocks, the last one short: the same totals, steps and hash, bit for bit."""
    path = tmp_path / "points.parquet"
    generate(path, 5 * BLOCK_SIZE + 100, seed=3)
    in_process = InProcess(inputs.build_package(tmp_path / "package", shipped_assumptions()), threads=2)
    try:
        whole = measure.run_in_process(in_process, path)
        monkeypatch.setattr(measure, "PIECE_ROWS", 2 * BLOCK_SIZE)
        pieces = measure.run_in_process(in_process, path)
    finally:
        in_process.close()
    assert measure.PIECE_ROWS % BLOCK_SIZE == 0
    assert (pieces.result_hash, pieces.steps, pieces.totals) == (whole.result_hash, whole.steps, whole.totals)
    assert whole.steps > 0 and all(v != 0 for v in whole.totals.values())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_me_totals_equal_k_times_lifelibs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("lifelib")
    pytest.importorskip("modelx")
    cache = tmp_path / "cache"
    argv = ["bench", "me", "--multiplier", str(MULTIPLIER), "--points", str(POINTS), "--repeats", "1"]
    code = cli.main([*argv, "--threads", "2", "--cache-dir", str(cache), "--dir", str(tmp_path / "scratch"), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0, doc

    lifelib = lifelib_oracle.load(cache)  # the run's own cache: lifelib ran once
    assert lifelib.pow_is_libm and len(lifelib) == 10_000
    assert doc["policies"] == MULTIPLIER * POINTS and doc["points_per_copy"] == POINTS
    assert doc["steps"] == MULTIPLIER * active_months(lifelib, POINTS)
    for name in lifelib_oracle.COMPONENTS:
        theirs = MULTIPLIER * math.fsum(lifelib.pv[name][:POINTS].tolist())
        print(f"pv_{name}: bench {doc['totals'][name]!r}, {MULTIPLIER} × lifelib {theirs!r}")
        assert doc["lifelib"]["expected_totals"][name] == theirs
        assert doc["totals"][name] == pytest.approx(theirs, rel=1e-12, abs=0), name
    assert doc["total_matches_lifelib"] and doc["all_hashes_identical"] and doc["mesh_steps_equal_in_process"]

    runs = [doc["in_process"], *doc["mesh"]]
    assert [m["engines"] for m in doc["mesh"]] == [1]
    for run in runs:
        assert run["seconds"] > 0 and run["steps_per_s"] > 0 and run["policies_per_s"] > 0
        assert run["steps_per_s"] == pytest.approx(doc["steps"] / run["seconds"])
    assert [p["seconds"] for p in doc["published"]] == [1.551, 3.448]
    assert all(p["points"] == 100_000_000 and p["steps_per_s"] > 0 for p in doc["published"])
    assert doc["steps_at_published_points"] == 10_000 * active_months(lifelib)

    # without lifelib, its results come from the cache (a machine lent for a run has a copy)
    monkeypatch.setattr(lifelib_oracle, "missing_packages", lambda: ["lifelib"])
    cached = lifelib_oracle.load(cache)
    assert cached.lifelib_version == lifelib.lifelib_version
    np.testing.assert_array_equal(cached.pv["net_cf"], lifelib.pv["net_cf"])
