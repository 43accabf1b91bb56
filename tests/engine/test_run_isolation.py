"""Runs on one engine are isolated: concurrent pipelines give their solo hashes, nothing a run
wrote is readable after it, and a view of the memory never outlives the memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from services.engine.memory import STATIC_LIMIT
from services.engine.pipeline import PipelineRunner, RunInputs
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.valuation.packages.config import REFERENCE_PIPELINE
from tests.engine.wasm_helpers import inputs

RUNS = 6


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return Runtime()


def distinct_inputs(i: int) -> RunInputs:
    """Different sizes, seeds and scenario counts, so each run lays out its buffers differently."""
    return inputs(700 + 500 * i, 5 + 3 * i, seed=11 + i)


def test_concurrent_pipelines_on_one_engine_give_their_solo_hashes(runtime: Runtime) -> None:
    runs = [distinct_inputs(i) for i in range(RUNS)]
    with WasmPool(runtime, threads=2) as pool:
        solo = [PipelineRunner(pool).run(REFERENCE_PIPELINE, r).result_hash for r in runs]
        assert len(set(solo)) == RUNS
        got: dict[int, str] = {}
        errors: list[BaseException] = []
        barrier = threading.Barrier(RUNS)

        def run(i: int) -> None:
            try:
                barrier.wait(10)
                got[i] = PipelineRunner(pool).run(REFERENCE_PIPELINE, runs[i]).result_hash
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
                errors.append(exc)

        for _ in range(2):  # two rounds: the interleaving differs between them
            threads = [threading.Thread(target=run, args=(i,)) for i in range(RUNS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert not errors, errors
            assert [got[i] for i in range(RUNS)] == solo


def nonzero_words(pool: WasmPool, start: int) -> int:
    mem = pool.memory
    data = np.frombuffer(mem.read(start, mem.size - start), dtype=np.uint64)
    return int(np.count_nonzero(data))


def test_nothing_a_run_wrote_is_readable_afterwards(runtime: Runtime) -> None:
    """One tenant's policies, scenarios and results must never be visible to the next run's models."""
    with WasmPool(runtime, threads=2) as pool:
        PipelineRunner(pool).run(REFERENCE_PIPELINE, inputs(3000, 17))
        assert pool.memory.size > pool.memory.run_base
        assert nonzero_words(pool, pool.memory.run_base) == 0  # inputs, bus buffers, workspace, outputs
        assert nonzero_words(pool, STATIC_LIMIT) == 0  # the worker stacks too
        assert nonzero_words(pool, 0) == 0  # and the models' static data


def test_a_view_read_after_close_does_not_crash() -> None:
    """Reading a view after the pool is closed and gone reads the memory it keeps alive."""
    script = textwrap.dedent(
        """
        import gc
        import numpy as np
        from services.engine.layout import Region
        from services.engine.runtime import Runtime
        from services.engine.workers import WasmPool

        pool = WasmPool(Runtime(), threads=1)
        memory = pool.memory
        memory.ensure(memory.run_base + (1 << 20))
        view = memory.view(Region("x", memory.run_base, 1 << 20), np.float64)
        view[:] = 2.0
        pool.close()
        del pool, memory
        gc.collect()
        print(float(view.sum()))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert float(result.stdout) == 2.0 * (1 << 17)
