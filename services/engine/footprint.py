"""How much engine memory a job needs at least, known before any engine runs it.

An engine holds a whole pipeline run in one linear memory: the scenario buffers (f64 [N][months]),
the model's workspace and its block partials (f64 [blocks][outputs][N]), besides the policies
and tables. Its cap is `GetCapabilities.memory_limit_bytes`. A job whose smallest
possible chunk does not fit any engine's cap can never run, whatever it is retried on: the
engine refuses such a chunk before it reads anything, and advertises the most scenarios it
can take (`max_scenarios`, GetCapabilities.max_scenarios) so that a gateway refuses such a job
at submit without knowing the engine's layout.

The figure is the layout the engine itself allocates (`services.engine.layout`, the same
functions the pipeline and the model drivers call), for the smallest run a chunk of the job
can be: one block, one worker thread. It is a lower bound, so it never refuses a job that some
chunk size could run: by default one policy with one month to project (a dataset's real
horizon is known only once its rows are read; pass ``months`` when it is known) and the
smallest declaration (`LEAST_SHAPE`: one column, one scenario input, one output, no tables); a
model's workspace, which it asks for at run time, is not counted.
"""

from __future__ import annotations

import numpy as np

from services.engine.layout import (
    LayoutBuilder,
    ProjectionShape,
    generator_regions,
    projection_regions,
    run_base,
    scenario_buffer,
)
from services.engine.wasm_nodes import GENERATOR_PARAMS

LEAST_SHAPE = ProjectionShape(
    rows=1,
    n_scen=1,
    n_outputs=1,
    columns=(("value", np.dtype(np.float64)),),
    tables=(),
    n_params=0,
    n_scenario_inputs=1,
)
"""The smallest projection a package can declare: one column, one scenario input, one output."""


def least_engine_bytes(
    scenarios: int,
    *,
    months: int = 1,
    policies: int = 1,
    threads: int = 1,
    shape: ProjectionShape = LEAST_SHAPE,
) -> int:
    """The least bytes of engine memory a chunk of a job with ``scenarios`` scenarios needs:
    the end of the layout of one block of ``policies`` policies projected over ``months``
    months on ``threads`` worker threads (the memory below the run holds the models' static
    data and the threads' stacks), without the workspace a model may ask for. Compare with an
    engine's ``memory_limit_bytes``.

    Pure arithmetic: a count of 4,294,967,295 costs no more than a count of one."""
    if scenarios < 1 or months < 1 or policies < 1 or threads < 1:
        raise ValueError("scenarios, months, policies and threads must be ≥ 1")
    alloc = LayoutBuilder(run_base(threads))
    for i in range(shape.n_scenario_inputs):
        scenario_buffer(alloc, f"scenario{i}", scenarios, months)
    generator_regions(alloc, "generator", n_buffers=shape.n_scenario_inputs, n_params=len(GENERATOR_PARAMS))
    projection_regions(alloc, "projection", ProjectionShape(
        rows=policies, n_scen=scenarios, n_outputs=shape.n_outputs, columns=shape.columns, tables=shape.tables,
        n_params=shape.n_params, n_scenario_inputs=shape.n_scenario_inputs,
    ))  # fmt: skip
    return alloc.end


def max_scenarios(memory_limit_bytes: int, *, threads: int = 1) -> int:
    """The most scenarios whose smallest chunk (`least_engine_bytes`) fits ``memory_limit_bytes``
    on ``threads`` worker threads: 0 when not even one does. The need grows with the count, so
    a bisection over [1, 2^32) finds it in 32 layouts."""
    if least_engine_bytes(1, threads=threads) > memory_limit_bytes:
        return 0
    fits, too_many = 1, 1 << 32
    while too_many - fits > 1:
        middle = (fits + too_many) // 2
        if least_engine_bytes(middle, threads=threads) <= memory_limit_bytes:
            fits = middle
        else:
            too_many = middle
    return fits
