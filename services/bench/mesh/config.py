"""What one ``livecalc bench mesh`` run measures: sizes, engine counts, models, from the command line."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from services.valuation.blocks import BLOCK_SIZE

DATASET_SEED: Final = 1
MODELS: Final = ("term_life", "savings")
"""``--model``: the shipped reference packages a run may measure (``both``: each in turn, one mesh)."""
PIPELINES: Final = {
    "term_life": "esg → term_life, dynamic lapse β={beta:g}",
    "savings": "normals → savings, lifelib CashValue_ME",
}
DYN_LAPSE_BETA: Final = 25.0
TARGETS: Final = {
    "overhead_10k": 0.25,  # mesh/in-process − 1 at 10K×1K
    "overhead_100k": 0.05,  # at 100K×1K (issue 20; 0.10 before)
    "end_to_end_10k_s": 1.5,
    "first_progress_s": 0.3,
}
SCALE_TARGETS: Final = {"gateway_peak_rss_mb": 300, "engine_peak_rss_mb": 500}
"""--scale: 1M policies × 1K scenarios within the seed's memory per service (issue 12)."""


@dataclass(frozen=True)
class Size:
    policies: int
    scenarios: int

    @property
    def label(self) -> str:
        return f"{_short(self.policies)}×{_short(self.scenarios)}"

    @property
    def dataset_id(self) -> str:
        return f"bench-{self.policies}"

    def dataset_of(self, model: str) -> str:
        """The dataset of this size's policies of ``model`` (term_life's keeps its old name)."""
        return self.dataset_id if model == "term_life" else f"bench-{model}-{self.policies}"


def _short(n: int) -> str:
    return f"{n // 1000}K" if n % 1000 == 0 and n >= 1000 else str(n)


@dataclass(frozen=True)
class BenchConfig:
    sizes: tuple[Size, ...]
    engine_counts: tuple[int, ...]
    threads: int
    repeats: int
    scratch: Path | None = None
    warm_up: bool = True
    engine_alone: bool = True
    scale: bool = False
    #: Also run every engine count with equal chunks (the planner before guided sizes).
    compare_equal: bool = False
    models: tuple[str, ...] = ("term_life",)
    #: savings' sizes (its rows project ~3× term_life's months, each step ~5× the work): by default
    #: a tenth of term_life's scenarios; --size, --quick and --scale set both.
    savings_sizes: tuple[Size, ...] = ()

    def sizes_of(self, model: str) -> tuple[Size, ...]:
        return (self.savings_sizes or self.sizes) if model == "savings" else self.sizes


def models_of(choice: str | None) -> tuple[str, ...]:
    """``--model``: one of `MODELS`, or ``both``."""
    return MODELS if choice == "both" else (choice or "term_life",)


def config_from(args: argparse.Namespace) -> BenchConfig:
    threads = args.threads or os.cpu_count() or 1
    scratch = Path(args.dir).resolve() if args.dir else None
    models = models_of(getattr(args, "model", None))
    if args.scale:
        # one long run each: the in-process pipeline (for the hash and the ratio) and the mesh with
        # one engine of all the cores (more engines on the same cores only share them)
        return BenchConfig(
            sizes=(Size(1_000_000, 1_000),),
            engine_counts=getattr(args, "engines", None) or (1,),
            threads=threads,
            repeats=args.repeats or 1,
            scratch=scratch,
            warm_up=False,
            engine_alone=False,
            scale=True,
            models=models,
        )
    savings_sizes: tuple[Size, ...] = ()
    if args.quick:
        sizes: tuple[Size, ...] = (Size(2 * BLOCK_SIZE, 50),)
        counts: tuple[int, ...] = (1, 2)
        repeats = 1
    else:
        # a deterministic (1-scenario) job beside the stochastic ones, the two shapes of one run
        sizes = (Size(100_000, 1), Size(10_000, 1_000))
        sizes += (Size(800_000, 1), Size(100_000, 1_000)) if args.large else ()
        savings_sizes = (Size(10_000, 100),) + ((Size(100_000, 100),) if args.large else ())
        counts = (1, 2, 3)
        repeats = 3
    if getattr(args, "size", None):
        sizes, savings_sizes = tuple(args.size), ()
    if getattr(args, "engines", None):
        counts = args.engines
    return BenchConfig(
        sizes=sizes,
        engine_counts=counts,
        threads=threads,
        repeats=args.repeats or repeats,
        scratch=scratch,
        compare_equal=bool(getattr(args, "compare_equal", False)),
        models=models,
        savings_sizes=savings_sizes,
    )


def parse_size(text: str) -> Size:
    """'100000x1000' (policies × scenarios; '100Kx1K' too)."""

    def number(part: str) -> int:
        part = part.strip().upper()
        scale = {"K": 1_000, "M": 1_000_000}.get(part[-1:], 1)
        return int(part[:-1] if scale > 1 else part) * scale

    policies, sep, scenarios = text.lower().replace("×", "x").partition("x")
    try:
        size = Size(number(policies), number(scenarios))
    except ValueError:
        size = Size(0, 0)
    if not sep or size.policies < 1 or size.scenarios < 1:
        raise argparse.ArgumentTypeError(f"--size wants POLICIESxSCENARIOS, e.g. 100000x1000 or 100Kx1K, got {text!r}")
    return size


def parse_counts(text: str) -> tuple[int, ...]:
    """'1,2,4,8' → (1, 2, 4, 8): engine counts, ascending, each ≥ 1."""
    try:
        counts = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        counts = ()
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"--engines wants counts like 1,2,4,8, got {text!r}")
    return counts
