"""`livecalc bench mesh --quick --json`: the benchmark runs end to end and every hash agrees.

A correctness test of the benchmark command (real processes on free ports, tiny sizes), not a
timing test: no figure is asserted beyond fitting in the time the command took, only the
document's shape and that the in-process run and every mesh job (1 and 2 engines) gave the same
result hash; `--model savings` the same through the savings package (normals → savings).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest

from services.bench.mesh.config import SCALE_TARGETS, BenchConfig, Size, config_from
from services.bench.mesh.report import SizeReport, scale_targets_met
from services.cli import build_parser
from tests.client.clitools import livecalc

pytestmark = pytest.mark.timeout(120)
BENCH = ("bench", "mesh")


def test_quick_json_has_every_figure_and_identical_hashes(tmp_path: Path) -> None:
    started = time.monotonic()
    done = livecalc(*BENCH, "--quick", "--compare-equal", "--json", "--dir", str(tmp_path), timeout=90)
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-4000:]
    doc = json.loads(done.stdout)  # one JSON document and nothing else
    assert doc["benchmark"] == "mesh" and doc["statistic"] == "median" and doc["models"] == ["term_life"]
    assert doc["all_hashes_identical"] is True
    assert set(doc["targets"]) >= {"overhead_10k", "overhead_100k", "end_to_end_10k_s", "first_progress_s"}
    assert doc["machine"]["cores"] >= 1
    (size,) = doc["sizes"]
    assert (size["model"], size["policies"], size["scenarios"]) == ("term_life", 2048, 50)
    assert size["hashes_identical"] is True and len(size["result_hash"]) == 64
    # warm-up + timed runs: in process, and each engine count; timed runs with equal chunks
    assert size["runs_hashed"] == (1 + len(size["mesh"])) * (1 + doc["repeats"]) + len(size["mesh"]) * doc["repeats"]
    assert set(size["mesh_equal_chunks"]) == {"1", "2"}
    for figures in size["mesh_equal_chunks"].values():
        assert figures["seconds"] > 0 and figures["chunks"] >= 1 and figures["guided_speedup"] > 0
    # every timed run happened one after another inside the command: together they cannot have
    # taken longer than the test saw the command take (a figure in the wrong unit, or made up)
    timed = [*size["in_process"]["seconds_all"], size["engine_alone"]["seconds"]]
    for runs in (size["mesh"], size["mesh_equal_chunks"]):
        timed += [seconds for figures in runs.values() for seconds in figures["seconds_all"]]
    assert 0 < sum(timed) < wall
    assert size["in_process"]["seconds"] > 0 and size["in_process"]["steps_per_s"] > 0
    assert size["engine_alone"]["seconds"] > 0
    # policies per second end to end, each way: the policies over the way's own median time
    for way in (size["in_process"], size["engine_alone"], *size["mesh"].values()):
        assert way["policies_per_s"] == pytest.approx(2048 / way["seconds"])
    assert set(size["mesh"]) == {"1", "2"}
    for figures in size["mesh"].values():
        assert figures["seconds"] > 0 and figures["steps_per_s"] > 0 and figures["ratio_to_in_process"] > 0
        assert 0 < figures["first_progress_s"] <= figures["seconds"]
        assert figures["steps_reported"] == size["steps"]  # every chunk's steps reached the result
        assert "first_statistics_s" in figures and figures["chunks"] >= 1
        # runs go in rounds (in process, engine alone, each engine count): the ratio pairs each
        # run with the in-process run of its round
        rounds = zip(figures["seconds_all"], size["in_process"]["seconds_all"], strict=True)
        assert figures["ratio_to_in_process"] == pytest.approx(statistics.median(m / i for m, i in rounds))
        # CPU of every process the way ran in (engines, data service, gateway), beside in process's
        assert figures["cpu_seconds"] >= 0 and figures["cpu_ratio_to_in_process"] >= 0
    assert size["in_process"]["cpu_seconds"] > 0  # the bench process's own threads ran the model
    assert size["engine_alone"]["cpu_seconds"] >= 0
    rss = size["peak_rss_bytes"]
    assert {"data", "engine-0", "engine-1", "gateway-1", "gateway-2"} <= set(rss)
    assert all(v > 0 for v in rss.values())


def test_scale_is_one_run_of_1m_by_1k_judged_by_the_seeds_memory() -> None:
    """`--scale` (run by hand: ~2 min here) plans 1M × 1K on one engine and judges peak RSS."""
    cfg = config_from(build_parser().parse_args(["bench", "mesh", "--scale", "--threads", "2"]))
    assert cfg.scale and not cfg.warm_up and not cfg.engine_alone
    assert cfg.sizes == (Size(1_000_000, 1_000),) and cfg.engine_counts == (1,) and cfg.repeats == 1
    report = SizeReport(cfg.sizes[0])
    mb = 1 << 20
    report.peak_rss = {"gateway-1": 200 * mb, "engine-0": 450 * mb, "data": 900 * mb}
    assert scale_targets_met([report])  # the data service is not judged
    report.peak_rss["engine-0"] = (SCALE_TARGETS["engine_peak_rss_mb"] + 1) * mb
    assert not scale_targets_met([report])


def test_engine_counts_and_sizes_from_the_command_line() -> None:
    """`--engines 1,2,4,8 --size 300Kx1K` (the scaling run on a many-core machine)."""
    args = ["bench", "mesh", "--engines", "8,1,4,2", "--size", "300Kx1K", "--size", "2048x50", "--threads", "2"]
    cfg = config_from(build_parser().parse_args(args))
    assert cfg.engine_counts == (1, 2, 4, 8) and cfg.sizes == (Size(300_000, 1_000), Size(2048, 50))
    assert not cfg.compare_equal
    assert config_from(build_parser().parse_args(["bench", "mesh", "--compare-equal"])).compare_equal
    scale = config_from(build_parser().parse_args(["bench", "mesh", "--scale", "--engines", "4"]))
    assert scale.engine_counts == (4,) and scale.sizes == (Size(1_000_000, 1_000),)
    for bad in (["--engines", "0,1"], ["--engines", "x"], ["--size", "100K"], ["--size", "0x5"], ["--size", "axb"]):
        with pytest.raises(SystemExit):
            config_from(build_parser().parse_args(["bench", "mesh", *bad]))


def test_savings_through_a_real_mesh(tmp_path: Path) -> None:
    """`--model savings`: the savings package's dataset and jobs through one engine, every hash equal."""
    done = livecalc(
        *BENCH, "--quick", "--model", "savings", "--engines", "1", "--json", "--dir", str(tmp_path), timeout=90
    )
    assert done.returncode == 0, done.stderr[-4000:]
    doc = json.loads(done.stdout)
    assert doc["models"] == ["savings"] and doc["all_hashes_identical"] is True
    (size,) = doc["sizes"]
    assert (size["model"], size["policies"], size["scenarios"]) == ("savings", 2048, 50)
    assert size["runs_hashed"] == 2 * (1 + doc["repeats"]) and size["hashes_identical"] is True
    assert size["in_process"]["steps_per_s"] > 0 and size["mesh"]["1"]["steps_per_s"] > 0
    assert size["mesh"]["1"]["steps_reported"] == size["steps"]
    assert (tmp_path / "datasets" / "bench-savings-2048.parquet").exists()


def test_model_choice_and_savings_sizes() -> None:
    """`--model`: term_life by default; savings at a tenth of the scenarios unless --size/--quick say."""

    def cfg(*args: str) -> BenchConfig:
        return config_from(build_parser().parse_args(["bench", "mesh", *args]))

    # one deterministic and one stochastic job by default, both shapes larger with --large
    assert cfg().models == ("term_life",) and cfg().sizes_of("term_life") == (Size(100_000, 1), Size(10_000, 1_000))
    assert cfg("--large").sizes_of("term_life")[2:] == (Size(800_000, 1), Size(100_000, 1_000))
    assert cfg("--model", "savings").models == ("savings",)
    assert cfg("--model", "both").models == ("term_life", "savings")
    assert cfg("--model", "savings").sizes_of("savings") == (Size(10_000, 100),)
    assert cfg("--model", "savings", "--large").sizes_of("savings") == (Size(10_000, 100), Size(100_000, 100))
    assert cfg("--model", "savings", "--size", "5Kx20").sizes_of("savings") == (Size(5_000, 20),)
    assert cfg("--model", "savings", "--quick").sizes_of("savings") == (Size(2048, 50),)
    assert Size(5_000, 20).dataset_of("savings") == "bench-savings-5000"
    assert Size(5_000, 20).dataset_of("term_life") == "bench-5000"
    with pytest.raises(SystemExit):
        cfg("--model", "annuity")
