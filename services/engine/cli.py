"""The engine's commands: `livecalc bench engine`."""

from __future__ import annotations

import argparse
from pathlib import Path

from services.common.client import positive_count
from services.common.errors import InvalidArgument
from services.engine.bench import MODELS, bench_engine


def _thread_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated thread counts, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("thread counts must be ≥ 1")
    return counts


def _models(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [n for n in names if n not in MODELS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected some of {','.join(MODELS)}, got {text!r}")
    return names


def _cmd_bench_engine(args: argparse.Namespace) -> int:
    if args.threads is not None and not args.threads:
        raise InvalidArgument("--threads needs at least one count")
    return bench_engine(
        args.threads,
        as_json=args.json,
        quick=args.quick,
        cache_dir=args.cache_dir,
        policies=args.policies,
        models=args.models,
    )


def register_bench(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = bench_sub.add_parser(
        "engine",
        help="policy·scenario·months per second: WASM with 1..K threads, native C and numpy, with ratios",
    )
    p.add_argument("--threads", type=_thread_counts, help="thread counts to measure, e.g. 1,2,4 (default 1..cores)")
    p.add_argument("--quick", action="store_true", help="a small problem, for a smoke run")
    p.add_argument(
        "--models",
        type=_models,
        default=MODELS,
        help="the models to measure, comma-separated: term_life (with the ABI v1 baseline) and savings "
        "(lifelib CashValue_ME, normals as data); default both",
    )
    p.add_argument(
        "--policies",
        type=positive_count,
        help="model points instead of 4,096 (more keep many threads busy: each gets policies / threads)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout, nothing else")
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="where compiled modules and native builds are kept (default ~/.cache/livecalc; "
        "a temporary directory when that is not writable)",
    )
    p.set_defaults(func=_cmd_bench_engine)
