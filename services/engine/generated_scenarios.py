"""A job's generated scenarios, kept between the pieces and chunks that run them.

Every piece of a chunk is one pipeline run, and each run would generate its scenarios again: at
1,000 scenarios the generator and the copy of its buffers are ~8 ms of the ~16 ms a run costs
beyond its projection, on pieces of ~0.35 s. A scenario is a pure function of the generator's
binary, its parameters and the month (a longer horizon only adds months at the end), so the
buffers one run made are given to the next runs of the same package and parameters as scenario
data (`RunInputs.scenario_data`), the generator not run, when they reach the run's horizon:
the same numbers in memory, so the same bits (tests/engine/test_generated_scenarios.py).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Final

from services.valuation.arrays import F64
from services.valuation.scenarios import ScenarioParams

#: Bytes of generated scenarios an engine keeps (least recently used dropped first).
KEPT_BYTES: Final = 64 << 20

Key = tuple[str, ScenarioParams]


class GeneratedScenarios:
    """Scenario buffers by (package hash, parameters): name → f64 [N][months], N all of the run's
    scenarios (runs of a window, from a scenario other than 0, neither give nor take them)."""

    def __init__(self, kept_bytes: int = KEPT_BYTES) -> None:
        self.kept_bytes = kept_bytes
        self._by_key: OrderedDict[Key, dict[str, F64]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, package_hash: str, params: ScenarioParams, months: int) -> dict[str, F64] | None:
        """The buffers kept for ``params``, if they reach ``months``."""
        with self._lock:
            found = self._by_key.get((package_hash, params))
            if found is None or any(a.shape[1] < months for a in found.values()):
                return None
            self._by_key.move_to_end((package_hash, params))
            return found

    def keep(self, package_hash: str, params: ScenarioParams, buffers: Mapping[str, F64]) -> None:
        """Keep a run's generated ``buffers`` (copies that nothing else writes), unless longer ones
        are kept already or they alone pass the bound."""
        size = sum(a.nbytes for a in buffers.values())
        if not buffers or size > self.kept_bytes:
            return
        key = (package_hash, params)
        with self._lock:
            old = self._by_key.get(key)
            if old is not None and all(old[n].shape[1] >= a.shape[1] for n, a in buffers.items() if n in old):
                return
            for a in buffers.values():
                a.flags.writeable = False
            self._by_key[key] = dict(buffers)
            self._by_key.move_to_end(key)
            while sum(a.nbytes for v in self._by_key.values() for a in v.values()) > self.kept_bytes:
                self._by_key.popitem(last=False)
