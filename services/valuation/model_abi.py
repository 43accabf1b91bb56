"""The model ABI's entry points (docs/model-interface.md "ABI v2"): what a package's WASM binary exports.

The package validator checks a binary against these tables at upload and the engine's sandbox
at load, so both speak one ABI; the engine's context structs live in ``services/engine/abi.py``.
A module's kind follows from its exports: ``lc_run_blocks`` makes a projection, otherwise
``lc_prepare_scenarios`` a scenario generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from services.common.wasm_binary import Signature

ABI_VERSION: Final = 2
"""The model ABI version this mesh speaks; a model's ``lc_abi_version`` returns it."""

ModelKind = Literal["projection", "generator"]
PROJECTION: Final = "projection"
GENERATOR: Final = "generator"

_I32: Final = "i32"
_NO_ARGS: Final[Signature] = ((), (_I32,))
_CTX: Final[Signature] = ((_I32,), (_I32,))
_RANGE: Final[Signature] = ((_I32, _I32, _I32), (_I32,))

SIGNATURES: Final[Mapping[str, Signature]] = {
    "lc_abi_version": _NO_ARGS,
    "lc_workspace_size": _CTX,
    "lc_prepare": _CTX,
    "lc_prepare_scenarios": _RANGE,
    "lc_run_blocks": _RANGE,
    "lc_interface_digest": _NO_ARGS,
    "lc_features": _NO_ARGS,
}
"""Every ABI entry point → (params, results), as wasmtime names the value types; an export of one
of these names must have this signature whatever the kind."""

ENTRY_POINTS: Final[Mapping[ModelKind, Mapping[str, Signature]]] = {
    "projection": {name: SIGNATURES[name] for name in ("lc_abi_version", "lc_run_blocks")},
    "generator": {name: SIGNATURES[name] for name in ("lc_abi_version", "lc_prepare_scenarios")},
}
"""The entry points each kind must export."""

OPTIONAL_ENTRY_POINTS: Final[Mapping[ModelKind, Mapping[str, Signature]]] = {
    "projection": {
        name: SIGNATURES[name]
        for name in ("lc_workspace_size", "lc_prepare", "lc_prepare_scenarios", "lc_interface_digest", "lc_features")
    },
    "generator": {name: SIGNATURES[name] for name in ("lc_workspace_size", "lc_prepare")},
}
"""The entry points each kind may export; the host calls those it finds (``lc_interface_digest``
only the package validator reads: the digest of the declaration the binary was built against,
services/valuation/sdk/digest.py; ``lc_features`` says what a projection writes besides its partials:
bit 0 row values, bit 1 block cash flows by month)."""


def model_kind(exports: Mapping[str, Signature] | frozenset[str]) -> ModelKind | None:
    """The kind of a module with these exports (``lc_run_blocks``: projection; else
    ``lc_prepare_scenarios``: generator), or None for neither."""
    if "lc_run_blocks" in exports:
        return "projection"
    if "lc_prepare_scenarios" in exports:
        return "generator"
    return None
