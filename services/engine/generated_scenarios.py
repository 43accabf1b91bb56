"""A job's generated scenarios, kept between the pieces and chunks that run them.

Every piece of a chunk is one pipeline run, and each run would generate its scenarios again: a
run of 16 rows at 1,000 scenarios (2 threads) takes 10.5–11.3 ms generating them and 5.9–7.6 ms
given them, beside pieces of ~0.3 s. A scenario is a pure function of the generator's
binary, its parameters and the month (a longer horizon only adds months at the end), so the
buffers one run made are given to the next runs of the same package and parameters as scenario
data (`RunInputs.scenario_data`), the generator not run, when they reach the run's horizon:
the same numbers in memory, so the same bits (tests/engine/test_generated_scenarios.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from services.engine.byte_lru import ByteLru
from services.valuation.arrays import F64
from services.valuation.scenarios import ScenarioParams

#: Bytes of generated scenarios an engine keeps (least recently used dropped first).
KEPT_BYTES: Final = 64 << 20

Key = tuple[str, ScenarioParams]


def _nbytes(buffers: Mapping[str, F64]) -> int:
    return sum(a.nbytes for a in buffers.values())


class GeneratedScenarios:
    """Scenario buffers by (package hash, parameters): name → f64 [N][months], N all of the run's
    scenarios (runs of a window, from a scenario other than 0, neither give nor take them). Used
    from the engine's event loop (the chunk runner), like the scenario-set cache."""

    def __init__(self, kept_bytes: int = KEPT_BYTES) -> None:
        self._kept: ByteLru[Key, dict[str, F64]] = ByteLru(kept_bytes, _nbytes)

    def get(self, package_hash: str, params: ScenarioParams, months: int) -> dict[str, F64] | None:
        """The buffers kept for ``params``, if they reach ``months``."""
        found = self._kept.get((package_hash, params))
        if found is None or any(a.shape[1] < months for a in found.values()):
            return None
        return found

    def keep(self, package_hash: str, params: ScenarioParams, buffers: Mapping[str, F64]) -> None:
        """Keep a run's generated ``buffers`` (copies that nothing else writes), unless longer ones
        are kept already or they alone pass the bound."""
        if not buffers:
            return
        key = (package_hash, params)
        old = self._kept.get(key)
        if old is not None and all(old[n].shape[1] >= a.shape[1] for n, a in buffers.items() if n in old):
            return
        for a in buffers.values():
            a.flags.writeable = False
        self._kept.put(key, dict(buffers))
