"""How much engine memory a job needs at least, known before any engine runs it.

An engine holds a whole pipeline run in one linear memory: the scenario rates (f64 [N][months]),
term_life's per-scenario workspace and its block partials (f64 [blocks][5][N]), besides the
policies and tables. Its cap is `GetCapabilities.memory_limit_bytes`. A job whose smallest
possible chunk does not fit any engine's cap can never run, whatever it is retried on: the
engine refuses such a chunk before it reads anything, and advertises the most scenarios it
can take (`max_scenarios`, GetCapabilities.max_scenarios) so that a gateway refuses such a job
at submit without knowing the engine's layout.

The figure is the layout the engine itself allocates (`services.engine.layout`, the same
functions the pipeline and the model drivers call), for the smallest run a chunk of the job
can be: one block, one worker thread. It is a lower bound, so it never refuses a job that some
chunk size could run: by default one policy with one month to project (a dataset's real
horizon is known only once its rows are read; pass ``months`` when it is known) and the
smallest assumption tables; rates and workspace grow with ``scenarios × months``, so the bound
is mostly ``64 · scenarios`` bytes at one month. The reference pipeline (wasm esg → wasm
term_life) is laid out; a package of ``python://`` reference nodes lays out a little less (no
contexts, no workspace), so for it the bound is not strict.
"""

from __future__ import annotations

from services.engine.layout import LayoutBuilder, TableShapes, esg_context, esg_rates, run_base, term_life_regions

LEAST_TABLES = TableShapes(mortality=(1, 1), lapse=1, curve=1)
"""The smallest tables a package can have that still cover one policy of one year."""


def least_engine_bytes(
    scenarios: int,
    *,
    months: int = 1,
    policies: int = 1,
    threads: int = 1,
    tables: TableShapes = LEAST_TABLES,
) -> int:
    """The least bytes of engine memory a chunk of a job with ``scenarios`` scenarios needs:
    the end of the layout of one block of ``policies`` policies projected over ``months``
    months on ``threads`` worker threads (the memory below the run holds the models' static
    data and the threads' stacks). Compare with an engine's ``memory_limit_bytes``.

    Pure arithmetic: a count of 4,294,967,295 costs no more than a count of one."""
    if scenarios < 1 or months < 1 or policies < 1 or threads < 1:
        raise ValueError("scenarios, months, policies and threads must be ≥ 1")
    alloc = LayoutBuilder(run_base(threads))
    esg_rates(alloc, "rates", scenarios, months)
    esg_context(alloc, "esg")
    # lanes = 1: scenarios are interleaved in groups of a model's lane count, which only rounds up
    term_life_regions(alloc, "term_life", rows=policies, n_scen=scenarios, months=months, tables=tables, lanes=1)
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
