#!/usr/bin/env bash
# Per-policy detail of a large job on a mesh of separate processes: wall time, rows/s and the peak
# resident memory of the gateway and each engine while the detail is recomputed and streamed.
#
# Starts a data service, ENGINES engines and a gateway (`livecalc serve …`, loopback ports), values
# ROWS generated term-life policies under SCENARIOS scenarios, resets each service's peak-RSS mark
# (/proc/PID/clear_refs), then asks GetJobDetail for SCENARIO (every block) and writes it to Parquet
# batch by batch in this process, as `livecalc jobs detail` does. Prints a table and one JSON line.
#
# Usage: scripts/detail_rss.sh [ROWS] [ENGINES]   (ROWS default 1000000, ENGINES default 2)
# SCENARIOS (default 1), SCENARIO (default 0) and THREADS (default: cores) pass through.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$root"
PYTHONPATH="$root:$root/gen" "$root/.venv/bin/python" - "$work" "${1:-1000000}" "${2:-2}" <<'EOF'
import json
import os
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from livecalc.gateway.v1 import job_pb2
from livecalc_client import Client
from services.bench.mesh.inputs import build_package, upload
from services.bench.mesh.runs import run_job
from services.common import rss
from services.common.processes import ServiceProcess, stop_in_stages
from services.data.generate import generate
from livecalc.engine.v1 import engine_pb2

work, rows, engines = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
scenarios, scenario = int(os.environ.get("SCENARIOS", "1")), int(os.environ.get("SCENARIO", "0"))
threads = os.environ.get("THREADS", str(os.cpu_count() or 1))
datasets = work / "datasets"
datasets.mkdir()
generate(datasets / "policies.parquet", rows, 7)
archive = build_package(work / "package")


def start(label: str, name: str, extra: list[str], env: dict[str, str] | None = None) -> ServiceProcess:
    return ServiceProcess.start(name, work / f"{label}.log", extra=extra, env=env, label=label, ready_timeout=60)


def reset_peak(pid: int) -> None:
    """VmHWM starts again from VmRSS (Linux: clear_refs 5), so the peak is the detail's alone."""
    with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")


services: list[ServiceProcess] = []
try:
    data = start("data", "data", ["--root", str(datasets)])
    services.append(data)
    for i in range(engines):
        extra = ["--data", data.address, "--threads", threads, "--cache-dir", str(work / f"cache-{i}")]
        services.append(start(f"engine-{i}", "engine", extra))
    addresses = ",".join(s.address for s in services[1:])
    gateway = start("gateway", "gateway", ["--engines", addresses, "--data-address", data.address],
                    env={"LIVECALC_DATA_DIR": str(work / "gw")})
    services.append(gateway)
    package_hash = upload(gateway.address, archive)
    spec = job_pb2.JobSpec(package_hash=package_hash, dataset_id="policies",
                           scenarios=engine_pb2.ScenarioSpec(count=scenarios))
    job = run_job(gateway.address, spec)
    with Client(gateway.address) as lc:
        job_id = next(j.job_id for j in lc.list_jobs(limit=1))
        before = {s.label: rss.rss_bytes(s.proc.pid) or 0 for s in services[1:]}
        before["client"] = rss.rss_bytes(os.getpid()) or 0
        for s in services[1:]:
            reset_peak(s.proc.pid)
        reset_peak(os.getpid())
        started = time.perf_counter()
        writer, written = None, 0
        for _, batch in lc.job_detail_batches(job_id, scenarios=[scenario]):
            writer = writer or pq.ParquetWriter(work / "detail.parquet", batch.schema)
            writer.write_batch(batch)
            written += batch.num_rows
        assert writer is not None
        writer.close()
        seconds = time.perf_counter() - started
    peaks = {s.label: s.peak_rss_bytes() or 0 for s in services[1:]}
    peaks["client"] = rss.peak_rss_bytes(os.getpid()) or 0
finally:
    stop_in_stages([[s.proc for s in reversed(services)]])
mib = 1 << 20
print(f"job: {rows:,} policies × {scenarios} scenario(s) on {engines} engines ({threads} threads each): "
      f"{job.seconds:.1f} s, result hash {job.result_hash[:16]}…")
print(f"detail of scenario {scenario}: {written:,} rows in {seconds:.1f} s = {written / seconds:,.0f} rows/s, "
      f"{(work / 'detail.parquet').stat().st_size / mib:.1f} MiB of Parquet")
print(f"{'process':<12}{'RSS before (MiB)':>18}{'peak during detail (MiB)':>26}")
for label, peak in peaks.items():
    print(f"{label:<12}{before.get(label, 0) / mib:>18.0f}{peak / mib:>26.0f}")
print(json.dumps({"rows": written, "seconds": round(seconds, 3), "rows_per_second": round(written / seconds),
                  "job_seconds": round(job.seconds, 3), "engines": engines, "threads": int(threads),
                  "rss_before_bytes": before, "peak_rss_bytes": peaks}))
EOF
