"""How fast an engine slot runs a job of a given shape, for the planner's chunk size.

A step (policy × scenario × month) does not cost the same in every job: a one-scenario run
fills the kernel's SIMD lanes with policies and does per-policy work the many-scenario layout
shares among 16 scenarios (about a fifth of the speed per step), savings runs at a quarter of
term life's speed, and a detail run writing cash flows at a fifth. One speed per engine, learnt
from whatever ran last, sized the next job's chunks from the wrong shape: after a 1-scenario job,
100K policies × 1K scenarios went out in 22 chunks of about 0.3 s instead of 13 of a second
(`bench mesh`, +30 % over in process). So speeds are kept per `SpeedShape`, and a shape not
seen yet plans with the planner's default (`planner.TARGET_CHUNK_STEPS`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Final, NamedTuple

#: Weight of a new chunk's speed in a slot's smoothed speed of its shape.
SPEED_SMOOTHING: Final = 0.3
#: Shapes an engine remembers (least recently measured dropped first).
SHAPES_KEPT: Final = 64
#: From this many scenarios on, every lane group but the last is full: one class.
MANY_SCENARIOS: Final = 64


class SpeedShape(NamedTuple):
    """Jobs whose steps cost alike on an engine: the same package (its model and tables), the
    same scenario class (each count below `MANY_SCENARIOS`, one class from there) and whether
    the run also writes row values or cash flows."""

    package_hash: str
    scenario_class: int
    detail: bool = False


def speed_shape(package_hash: str, scenarios: int, *, detail: bool = False) -> SpeedShape:
    return SpeedShape(package_hash, min(max(1, scenarios), MANY_SCENARIOS), detail)


class SlotSpeeds:
    """One engine's measured slot speeds (steps per second of one slot), by shape."""

    def __init__(self) -> None:
        self._by_shape: OrderedDict[SpeedShape, float] = OrderedDict()

    def observe(self, shape: SpeedShape, steps: int, seconds: float) -> None:
        """A chunk of ``shape`` computed ``steps`` in ``seconds`` on one slot (slots share the
        engine's threads, so this is the slot's share); smoothed with the shape's earlier chunks."""
        if steps <= 0 or seconds <= 0:
            return
        speed = steps / seconds
        old = self._by_shape.pop(shape, 0.0)
        self._by_shape[shape] = speed if old <= 0 else old + SPEED_SMOOTHING * (speed - old)
        while len(self._by_shape) > SHAPES_KEPT:
            self._by_shape.popitem(last=False)

    def of(self, shape: SpeedShape) -> float:
        """The slot speed measured for ``shape``; 0 when no chunk of it has finished here."""
        return self._by_shape.get(shape, 0.0)


def median_speed(speeds: Iterable[SlotSpeeds], shape: SpeedShape) -> float:
    """The median slot speed for ``shape`` over the engines that measured it (0: none), so one
    slow engine does not set it for all."""
    known = sorted(s for s in (e.of(shape) for e in speeds) if s > 0)
    return known[len(known) // 2] if known else 0.0
