"""`livecalc bench store`: the measurement runs end to end and prints one JSON object with every
figure (a correctness test of the command; no figure is judged here: BENCHMARKS.md has them)."""

from __future__ import annotations

import json
import subprocess

from tests.support import ROOT, VENV_BIN


def test_bench_store_prints_every_figure() -> None:
    done = subprocess.run(
        [str(VENV_BIN / "livecalc"), "bench", "store", "--jobs", "3", "--seconds", "1", "--contention", "disk"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    doc = json.loads(done.stdout)  # one JSON object and nothing else
    assert (doc["jobs"], doc["contention"]) == (3, "disk")
    assert doc["store_calls"] > 0 and doc["events"] > 0
    # every event is delivered some time after it is written, and the quantiles are ordered
    assert 0 < doc["event_delivery_p50_ms"] <= doc["event_delivery_p99_ms"]
    assert 0 <= doc["loop_lag_50ms_p99_ms"] <= doc["loop_lag_50ms_max_ms"]
