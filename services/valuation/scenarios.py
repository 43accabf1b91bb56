"""Parameters of the scenario generator (docs/model.md "Scenario generators"), validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from services.valuation.errors import Violation, raise_if

U64_MAX: Final = (1 << 64) - 1


@dataclass(frozen=True)
class ScenarioParams:
    """Parameters of the scenario generator (docs/model.md "Scenario settings").

    ``count`` scenarios s = 0 … count−1; with ``include_base`` scenario 0 is the base curve
    (r ≡ 0). ``a`` is the Ornstein–Uhlenbeck mean reversion per year, ``sigma`` the annual
    volatility of the short-rate shock, ``seed`` an unsigned 64-bit integer.
    """

    count: int
    seed: int = 0
    a: float = 0.1
    sigma: float = 0.01
    include_base: bool = True

    def __post_init__(self) -> None:
        bad: list[Violation] = []
        if isinstance(self.count, bool) or not isinstance(self.count, int | np.integer) or self.count < 1:
            bad.append(Violation("count", f"must be an integer ≥ 1, got {self.count!r}"))
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int | np.integer)
            or not 0 <= int(self.seed) <= U64_MAX
        ):
            bad.append(Violation("seed", f"must be an integer in 0..2^64−1, got {self.seed!r}"))
        if not (math.isfinite(self.a) and self.a > 0):
            bad.append(Violation("a", f"must be finite and > 0, got {self.a!r}"))
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            bad.append(Violation("sigma", f"must be finite and ≥ 0, got {self.sigma!r}"))
        raise_if("scenario parameters", bad)
        object.__setattr__(self, "count", int(self.count))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "a", float(self.a))
        object.__setattr__(self, "sigma", float(self.sigma))
        object.__setattr__(self, "include_base", bool(self.include_base))
