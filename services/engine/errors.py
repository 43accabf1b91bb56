"""Typed errors of the engine's WASM host and pipeline runner.

Each is a `LivecalcError` subclass, so the server maps it to its gRPC status in one place:
a model that is refused at load or given bad input → INVALID_ARGUMENT / FAILED_PRECONDITION,
one that runs past its deadline → DEADLINE_EXCEEDED, asks for too much memory →
RESOURCE_EXHAUSTED, traps → INTERNAL. `EngineError` lets callers catch all of them.
"""

from __future__ import annotations

from services.common.errors import (
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


class ForbiddenImportError(ModelLoadError):
    """A model imports something other than `env.memory`; ``imports`` lists the offenders."""

    def __init__(self, model: str, imports: list[str]) -> None:
        self.model = model
        self.imports = tuple(imports)
        super().__init__(f"model {model!r} imports {', '.join(imports)}: only env.memory (shared) may be imported")


class ModelMemoryExceeded(EngineError, ResourceExhausted):
    """A model needs or grew linear memory past the engine's cap."""


class ModelDeadlineExceeded(EngineError, DeadlineExceeded):
    """A model call ran past its deadline and was interrupted (epoch interruption)."""


class ModelCancelled(EngineError, Cancelled):
    """The run was cancelled; WASM in flight was interrupted."""


class ModelTrap(EngineError, Internal):
    """A model trapped (unreachable, out-of-bounds access, division by zero, stack overflow)."""

    def __init__(self, model: str, function: str, trap: str, code: str | None) -> None:
        self.model, self.function, self.trap, self.trap_code = model, function, trap, code
        lines = [line.strip() for line in trap.strip().splitlines() if line.strip()]
        # wasmtime puts the backtrace first and the cause ("wasm trap: …") last
        reason = lines[-1] if lines else "trap"
        super().__init__(f"model {model!r} trapped in {function}: {reason}")


class ModelFailed(EngineError, FailedPrecondition):
    """A model entry point returned a non-zero status code (see docs/model-abi.md)."""

    def __init__(self, model: str, function: str, status: int, meaning: str) -> None:
        self.model, self.function, self.status = model, function, status
        super().__init__(f"model {model!r} {function} returned {status}: {meaning}")


class InvalidModelInput(EngineError, InvalidArgument):
    """Policies, assumptions or scenario parameters break the model's rules (MODEL.md)."""


class PipelineError(EngineError, InvalidArgument):
    """A package's pipeline is malformed: unknown input, cycle, unknown engine, bad node."""


class ModelNotLoaded(EngineError, FailedPrecondition):
    """A run called a model it has not loaded."""


class EngineClosed(EngineError, FailedPrecondition):
    """The host or worker pool was used after close()."""
