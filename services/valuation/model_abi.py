"""The model ABI's entry points (docs/model-abi.md): what a package's WASM binary must export.

The package validator checks a binary against this table at upload and the engine's sandbox
at load, so both speak one ABI; the engine's context structs live in ``services/engine/abi.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from services.common.wasm_binary import Signature

ABI_VERSION: Final = 1
"""The model ABI version this mesh speaks; a model's ``lc_abi_version`` returns it."""

_I32: Final = "i32"
_VERSION: Final[Mapping[str, Signature]] = {"lc_abi_version": ((), (_I32,))}

ENTRY_POINTS: Final[Mapping[str, Mapping[str, Signature]]] = {
    "esg": {**_VERSION, "esg_run": ((_I32, _I32, _I32), (_I32,))},
    "term_life": {
        **_VERSION,
        "tl_lanes": ((), (_I32,)),
        "tl_prepare": ((_I32,), (_I32,)),
        "tl_prepare_scenarios": ((_I32, _I32, _I32), (_I32,)),
        "tl_premiums": ((_I32, _I32, _I32), (_I32,)),
        "tl_run_blocks": ((_I32, _I32, _I32), (_I32,)),
    },
}
"""Each model kind's entry points → (params, results), as wasmtime names the value types."""

SIGNATURES: Final[Mapping[str, Signature]] = {name: sig for kind in ENTRY_POINTS.values() for name, sig in kind.items()}
"""Every ABI entry point's signature, whatever the kind."""


def model_kind(exports: Mapping[str, Signature] | frozenset[str]) -> str | None:
    """The kind whose run entry point a module exports (``esg_run`` or ``tl_run_blocks``), if any."""
    if "esg_run" in exports:
        return "esg"
    if "tl_run_blocks" in exports:
        return "term_life"
    return None
