"""The engine asks a model's ABI version when a run loads it: a binary that speaks another version,
or computes its answer at run time, is refused before any entry point runs (uploads are checked
statically; this is the check that covers binaries the static check cannot judge)."""

from __future__ import annotations

import pytest
import wasmtime

from services.engine.errors import ModelLoadError
from services.engine.pipeline import PipelineRunner
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.valuation.packages.config import REFERENCE_PIPELINE
from services.valuation.reference_model import shipped_models
from tests.engine.wasm_helpers import inputs


def generator(version: str) -> bytes:
    """A generator whose lc_abi_version returns ``version`` (a WAT expression)."""
    return bytes(
        wasmtime.wat2wasm(
            f"""(module (import "env" "memory" (memory 1 65535 shared))
              (global (export "__heap_base") i32 (i32.const 0))
              (func (export "lc_abi_version") (result i32) {version})
              (func (export "lc_prepare_scenarios") (param i32 i32 i32) (result i32) (i32.const 0)))"""
        )
    )


@pytest.mark.parametrize(
    ("version", "says"),
    [("(i32.const 1)", "version 1"), ("(i32.add (i32.const 1) (i32.const 2))", "version 3")],
    ids=["v1", "computed-v3"],
)
def test_a_model_of_another_abi_version_is_refused_when_a_run_loads_it(version: str, says: str) -> None:
    binaries = {**shipped_models(), "esg": generator(version)}
    with WasmPool(Runtime(), threads=1) as pool:
        with pytest.raises(ModelLoadError, match=f"wasm://esg speaks model ABI {says}; this engine speaks version 2"):
            PipelineRunner(pool, binaries).run(REFERENCE_PIPELINE, inputs(10, 2))
        # the shipped build on the same pool still runs
        assert PipelineRunner(pool).run(REFERENCE_PIPELINE, inputs(10, 2)).partials.shape == (1, 5, 2)
