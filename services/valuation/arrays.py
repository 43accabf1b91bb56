"""Array type aliases shared by the domain modules."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]
Mask = npt.NDArray[np.bool_]


def rows_where(mask: Mask) -> list[int]:
    """The positions where ``mask`` is true, as Python ints."""
    return [int(i) for i in np.flatnonzero(mask)]
