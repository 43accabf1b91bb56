"""``livecalc bench me``: its flags, and the run printed as text or one JSON document."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from services.bench.me.measure import MeConfig, measure
from services.bench.me.report import document, text
from services.bench.mesh.config import parse_counts
from services.common.client import positive_count


def config_from(args: argparse.Namespace) -> MeConfig:
    from services.engine.runtime import usable_cache_dir  # noqa: PLC0415

    cache = Path(args.cache_dir) if args.cache_dir else usable_cache_dir() / "bench-me"
    return MeConfig(
        multiplier=args.multiplier,
        points=args.points,
        engine_counts=args.engines,
        threads=args.threads or os.cpu_count() or 1,
        repeats=args.repeats,
        cache_dir=cache,
    )


def cmd_bench_me(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    progress = None if args.json else sys.stderr
    if args.dir:
        scratch = Path(args.dir).resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        doc = document(measure(cfg, scratch, progress))
    else:
        with tempfile.TemporaryDirectory(prefix="livecalc-bench-me-") as tmp:
            doc = document(measure(cfg, Path(tmp), progress))
    print(json.dumps(doc, indent=2) if args.json else text(doc))
    return 0 if doc["ok"] else 1


def register_bench(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bench me`."""
    p = bench_sub.add_parser(
        "me",
        help="lifelib's BasicTerm_ME model points ×K, one base scenario, through the mesh and in process, "
        "against lifelib's total and the published JAX figures (needs lifelib)",
    )
    p.add_argument(
        "--multiplier", type=positive_count, default=1, help="copies of the model points (default 1; 10000: 100M)"
    )
    p.add_argument(
        "--points",
        type=positive_count,
        default=10_000,
        help="the first N of lifelib's 10,000 model points in each copy (default all)",
    )
    p.add_argument(
        "--engines", type=parse_counts, default=(1,), help="engine counts to measure, e.g. 1,2,4,8 (default 1)"
    )
    p.add_argument("--threads", type=int, help="threads per engine and in process (default: cores)")
    p.add_argument("--repeats", type=positive_count, default=3, help="timed runs of each (default 3; median reported)")
    p.add_argument("--dir", help="scratch directory to use and keep (default: a temporary one, removed)")
    p.add_argument(
        "--cache-dir", help="where lifelib's results are kept between runs (default ~/.cache/livecalc/bench-me)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON document and nothing else")
    p.set_defaults(func=cmd_bench_me)
