"""`livecalc bench data`: the data service's figures on a generated dataset.

Generates N synthetic policies as CSV and Parquet in a scratch directory, measures the
catalog's metadata path in-process through a byte-counting storage wrapper (cold: first
sight, index/hash built; warm: a new process with the sidecar present; hot: cached), then
starts `livecalc serve data` as its own process and times SampleRows (10,000 rows),
ReadRows of the whole dataset and of random ranges over gRPC, and reports the service's
peak resident memory (VmHWM). Benchmarks print numbers; they assert nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import grpc

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from services.common import rss
from services.common.readiness import wait_serving
from services.common.storage.base import CountingStorage
from services.common.storage.local import LocalStorage
from services.data.catalog import Catalog
from services.data.generate import generate

SAMPLE_N = 10_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure_metadata(root: Path, dataset_id: str) -> dict[str, Any]:
    """Cold, warm and hot GetDataset through the catalog, with bytes read each time."""

    async def run() -> dict[str, Any]:
        figures: dict[str, Any] = {}
        for phase in ("cold", "warm", "hot"):
            if phase != "hot":
                storage = CountingStorage(LocalStorage(root))
                catalog = Catalog(storage)
            storage.reset()
            t = time.perf_counter()
            entry = await catalog.get(dataset_id)
            figures[phase] = {"seconds": time.perf_counter() - t, "bytes_read": storage.bytes_read}
        figures["rows"] = entry.rows
        figures["size_bytes"] = entry.info.size
        return figures

    return anyio.run(run, backend="asyncio")


def _count_rows(stub: data_service_pb2_grpc.DataServiceStub, request: data_service_pb2.ReadRowsRequest) -> int:
    return sum(m.row_count for m in stub.ReadRows(request))


def measure_service(stub: data_service_pb2_grpc.DataServiceStub, dataset_id: str, rows: int) -> dict[str, Any]:
    get_s, _ = _timed(lambda: stub.GetDataset(data_service_pb2.GetDatasetRequest(dataset_id=dataset_id)))
    sample = data_service_pb2.SampleRowsRequest(dataset_id=dataset_id, n=min(SAMPLE_N, rows), seed=1)
    sample_s, reply = _timed(lambda: stub.SampleRows(sample))
    cached_s, _ = _timed(lambda: stub.SampleRows(sample))

    def read_all() -> tuple[int, int]:
        n = size = 0
        for message in stub.ReadRows(
            data_service_pb2.ReadRowsRequest(dataset_id=dataset_id, start_row=0, end_row=rows)
        ):
            n += message.row_count
            size += len(message.arrow_ipc)
        return n, size

    read_s, (read_rows, read_bytes) = _timed(read_all)
    rng = random.Random(7)
    range_times = []
    for _ in range(20):
        start = rng.randrange(0, max(rows - 10_000, 1))
        end = min(start + 10_000, rows)
        request = data_service_pb2.ReadRowsRequest(dataset_id=dataset_id, start_row=start, end_row=end)
        seconds, _ = _timed(partial(_count_rows, stub, request))
        range_times.append(seconds)
    return {
        "get_dataset_seconds": get_s,
        "sample_rows": len(reply.rows),
        "sample_seconds": sample_s,
        "sample_cached_seconds": cached_s,
        "read_rows": read_rows,
        "read_seconds": read_s,
        "read_rows_per_second": read_rows / read_s if read_s else None,
        "read_ipc_mb_per_second": read_bytes / read_s / 1e6 if read_s else None,
        "random_range_10k_rows_mean_seconds": sum(range_times) / len(range_times),
    }


def run_bench(rows: int, seed: int, workdir: Path) -> dict[str, Any]:
    root = workdir / "datasets"
    root.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"rows": rows, "seed": seed, "formats": {}}
    for fmt in ("csv", "parquet"):
        gen_s, size = _timed(partial(generate, root / f"bench.{fmt}", rows, seed))
        result["formats"][fmt] = {"generate_seconds": gen_s, "size_bytes": size}
    # one id per format, so both can live in one root
    (root / "bench.parquet").rename(root / "bench_pq.parquet")
    ids = {"csv": "bench", "parquet": "bench_pq"}
    for fmt, dataset_id in ids.items():
        result["formats"][fmt]["metadata"] = measure_metadata(root, dataset_id)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "services.cli", "serve", "data", "--root", str(root), "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--metrics-port", "-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving(address, proc=proc, label="the data service")
        with grpc.insecure_channel(address) as channel:
            stub = data_service_pb2_grpc.DataServiceStub(channel)
            for fmt, dataset_id in ids.items():
                result["formats"][fmt]["service"] = measure_service(stub, dataset_id, rows)
        peak = rss.peak_rss_bytes(proc.pid)
        result["service_peak_rss_mb"] = None if peak is None else peak / (1 << 20)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return result


def _print_human(r: dict[str, Any]) -> None:
    print(f"data service bench: {r['rows']:,} rows, seed {r['seed']}")
    for fmt, f in r["formats"].items():
        m, s = f["metadata"], f["service"]
        print(f"\n{fmt.upper()} ({f['size_bytes']:,} bytes, generated in {f['generate_seconds']:.2f} s)")
        for phase in ("cold", "warm", "hot"):
            p = m[phase]
            print(f"  metadata {phase:<5} {p['seconds'] * 1000:9.2f} ms  {p['bytes_read']:>12,} bytes read")
        print(f"  GetDataset (gRPC)  {s['get_dataset_seconds'] * 1000:9.2f} ms")
        sample_ms, cached_ms = s["sample_seconds"] * 1000, s["sample_cached_seconds"] * 1000
        print(f"  SampleRows {s['sample_rows']:,}   {sample_ms:9.2f} ms (cached {cached_ms:.2f} ms)")
        print(
            f"  ReadRows all       {s['read_seconds']:9.2f} s   {s['read_rows_per_second']:,.0f} rows/s"
            f"  {s['read_ipc_mb_per_second']:.1f} MB/s Arrow IPC"
        )
        print(
            f"  ReadRows 10k range {s['random_range_10k_rows_mean_seconds'] * 1000:9.2f} ms (mean of 20 random ranges)"
        )
    peak = r.get("service_peak_rss_mb")
    print(f"\nservice peak memory (VmHWM): {peak:.0f} MB" if peak is not None else "\nservice peak memory: n/a")


def cmd_bench(args: argparse.Namespace) -> int:
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="livecalc-bench-data-"))
    try:
        result = run_bench(args.rows, args.seed, workdir)
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_human(result)
    return 0


def add_bench_parser(bench_sub: Any) -> None:
    p = bench_sub.add_parser("data", help="data service: metadata, sampling and ReadRows figures")
    p.add_argument("--rows", type=int, default=2_000_000, help="policies to generate (default 2,000,000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", help="scratch directory to use and keep (default: a temporary one, removed)")
    p.add_argument("--json", action="store_true", help="print one JSON document and nothing else")
    p.set_defaults(func=cmd_bench)
