"""``livecalc bench mesh``: its flags, and the run printed as text or one JSON document."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from services.bench.mesh.config import MODELS, config_from, parse_counts, parse_size
from services.bench.mesh.measure import measure
from services.bench.mesh.report import text


def cmd_bench_mesh(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    progress = None if args.json else sys.stderr
    if cfg.scratch is not None:
        cfg.scratch.mkdir(parents=True, exist_ok=True)
        doc = measure(cfg, cfg.scratch, progress)
    else:
        with tempfile.TemporaryDirectory(prefix="livecalc-bench-mesh-") as tmp:
            doc = measure(cfg, Path(tmp), progress)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(text(doc))
    ok = doc["all_hashes_identical"] and doc.get("scale_targets", {}).get("met", True)
    return 0 if ok else 1


def register_bench(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bench mesh`."""
    p = bench_sub.add_parser(
        "mesh",
        help="the mesh as real processes (1, 2, 3 engines) against the in-process pipeline, same inputs",
    )
    p.add_argument(
        "--large",
        action="store_true",
        help="also 800K policies × 1 scenario and 100K × 1K (by default 100K × 1 and 10K × 1K)",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes (2K × 50, 1 and 2 engines), one timed run")
    p.add_argument(
        "--scale",
        action="store_true",
        help="1M policies × 1K scenarios, one engine, one run each; gateway < 300 MB and engine < 500 MB peak RSS",
    )
    p.add_argument("--threads", type=int, help="threads per engine and in process (default: cores)")
    p.add_argument(
        "--model",
        choices=(*MODELS, "both"),
        default="term_life",
        help="the reference package to run: term_life (esg → term_life, the default), savings (normals → "
        "savings, lifelib CashValue_ME; by default 10K × 100 and with --large 100K × 100) or both, in turn",
    )
    p.add_argument(
        "--engines",
        type=parse_counts,
        help="engine counts to measure, e.g. 1,2,4,8 (one gateway each over the first N engines)",
    )
    p.add_argument(
        "--size",
        type=parse_size,
        action="append",
        help="POLICIESxSCENARIOS instead of the default sizes, e.g. 300Kx1K (repeatable)",
    )
    p.add_argument(
        "--compare-equal",
        action="store_true",
        help="also run each engine count with equal chunks (the planner before guided sizes), side by side",
    )
    p.add_argument("--repeats", type=int, help="timed runs per configuration (default 3; median reported)")
    p.add_argument("--dir", help="scratch directory to use and keep (default: a temporary one, removed)")
    p.add_argument("--json", action="store_true", help="print one JSON document and nothing else")
    p.set_defaults(func=cmd_bench_mesh)
