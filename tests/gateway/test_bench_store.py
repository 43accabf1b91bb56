"""`livecalc bench store`: the measurement runs end to end and prints one JSON object with every
figure (a correctness test of the command; no figure is judged here: BENCHMARKS.md has them)."""

from __future__ import annotations

import json

from tests.client.clitools import livecalc


def test_bench_store_prints_every_figure() -> None:
    done = livecalc("bench", "store", "--jobs", "3", "--seconds", "1", "--contention", "disk", timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    doc = json.loads(done.stdout)  # one JSON object and nothing else
    assert (doc["jobs"], doc["contention"]) == (3, "disk")
    assert doc["store_calls"] > 0 and doc["events"] > 0
    # every event is delivered some time after it is written, and the quantiles are ordered
    assert 0 < doc["event_delivery_p50_ms"] <= doc["event_delivery_p99_ms"]
    assert 0 <= doc["loop_lag_50ms_p99_ms"] <= doc["loop_lag_50ms_max_ms"]
