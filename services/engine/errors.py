"""Typed errors of the engine's WASM host and pipeline runner.

Each is a `LivecalcError` subclass, so the server maps it to its gRPC status in one place:
a model that is refused at load or given bad input → INVALID_ARGUMENT / FAILED_PRECONDITION,
one that runs past its deadline → DEADLINE_EXCEEDED, asks for too much memory →
RESOURCE_EXHAUSTED, traps → INTERNAL. `EngineError` lets callers catch all of them.

Errors that would recur on any engine and any retry are marked `FAULT_MODEL` (a model that
cannot be loaded, traps, fails, or runs past the engine's time limit per call); a run too large
for the engine's memory cap is marked `FAULT_TOO_LARGE`. The mark travels as trailing metadata
(`services.common.errors.FAULT_KEY`), so a dispatcher can tell them from an engine's outage.
"""

from __future__ import annotations

from services.common.errors import (
    FAULT_MODEL,
    FAULT_TOO_LARGE,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    LivecalcError,
    ResourceExhausted,
)


class EngineError(LivecalcError):
    """Base of the engine's own errors (the status code comes from the second base)."""


class ModelLoadError(EngineError, InvalidArgument):
    """A WASM binary that cannot be compiled or does not honour the model ABI."""

    fault = FAULT_MODEL


class ForbiddenImportError(ModelLoadError):
    """A model imports something other than `env.memory`; ``imports`` lists the offenders."""

    def __init__(self, model: str, imports: list[str]) -> None:
        self.model = model
        self.imports = tuple(imports)
        super().__init__(f"model {model!r} imports {', '.join(imports)}: only env.memory (shared) may be imported")


class ModelMemoryExceeded(EngineError, ResourceExhausted):
    """A run (its layout, or a model's own ``memory.grow``) needs memory past the engine's cap:
    work too large for this engine, whatever else it runs."""

    fault = FAULT_TOO_LARGE


class ModelDeadlineExceeded(EngineError, DeadlineExceeded):
    """A model call ran past its run's deadline and was interrupted (epoch interruption)."""


class ModelTimeLimitExceeded(ModelDeadlineExceeded):
    """One model call ran past the engine's time limit per call: it loops, or the call is more
    work than any engine gives one call. It would do the same on any engine."""

    fault = FAULT_MODEL

    def __init__(self, model: str, function: str, limit_seconds: float) -> None:
        self.model, self.function, self.limit_seconds = model, function, limit_seconds
        super().__init__(
            f"model {model!r} {function} ran past the engine's limit of {limit_seconds:g} s per model call "
            "and was interrupted: the model loops, or one call of it is too much work "
            "(--piece-time-limit, LIVECALC_ENGINE_PIECE_TIME_LIMIT)"
        )


class ModelCancelled(EngineError, Cancelled):
    """The run was cancelled; WASM in flight was interrupted."""


class ModelTrap(EngineError, Internal):
    """A model trapped (unreachable, out-of-bounds access, division by zero, stack overflow)."""

    fault = FAULT_MODEL

    def __init__(self, model: str, function: str, trap: str, code: str | None) -> None:
        self.model, self.function, self.trap, self.trap_code = model, function, trap, code
        lines = [line.strip() for line in trap.strip().splitlines() if line.strip()]
        # wasmtime puts the backtrace first and the cause ("wasm trap: …") last
        reason = lines[-1] if lines else "trap"
        super().__init__(f"model {model!r} trapped in {function}: {reason}")


class ModelFailed(EngineError, FailedPrecondition):
    """A model entry point returned a non-zero status code (see docs/model-abi.md)."""

    fault = FAULT_MODEL

    def __init__(self, model: str, function: str, status: int, meaning: str) -> None:
        self.model, self.function, self.status = model, function, status
        super().__init__(f"model {model!r} {function} returned {status}: {meaning}")


class InvalidModelInput(EngineError, InvalidArgument):
    """Policies, assumptions or scenario parameters break the model's declared rules (docs/datasets.md)."""


class DetailUnavailable(EngineError, FailedPrecondition):
    """A run asked a model for detail it cannot give: cash flows from a model that declares no
    monthly outputs, or was built without writing them (docs/model-interface.md "Row values and
    cash flows")."""


class PipelineError(EngineError, InvalidArgument):
    """A package's pipeline is malformed: unknown input, cycle, unknown engine, bad node."""


class ModelNotLoaded(EngineError, FailedPrecondition):
    """A run called a model it has not loaded."""


class EngineClosed(EngineError, FailedPrecondition):
    """The host or worker pool was used after close()."""
