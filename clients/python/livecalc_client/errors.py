"""The one error tree of LiveCalc Mesh (the services' `services.common.errors` re-exports it).

Expected failures (bad input, unknown ids, limits, deadlines) are raised as subclasses of
`LivecalcError`; each carries the gRPC status code it maps to. The server interceptor in
`services.common.interceptors` turns them into statuses in one place; any other exception
is a bug, logged with its traceback and answered as INTERNAL.

Some failures also say *whose* fault they are, in the trailing metadata key `FAULT_KEY`
(`LivecalcError.fault`): `FAULT_MODEL` for a refusal that would recur on any engine and any
retry (a model that loops past its time limit, traps, or cannot be loaded), `FAULT_TOO_LARGE`
for work that can never fit the answering engine's memory. A transient refusal (an engine
whose slots are all busy) carries no mark, so a caller may retry it elsewhere or later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import grpc

FAULT_KEY: Final = "livecalc-fault"
"""Trailing metadata key of a refusal's fault mark (absent: no mark)."""
FAULT_MODEL: Final = "model"
"""The work fails the same way on any engine and any retry: the model's (or the job's) fault."""
FAULT_TOO_LARGE: Final = "too-large"
"""The work can never fit the answering engine's memory cap."""


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field: its dotted path and what is wrong with it."""

    field: str
    description: str


class LivecalcError(Exception):
    """Base of all expected failures; `code` is the gRPC status they map to."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    fault: str = ""
    """Sent as trailing metadata `FAULT_KEY` when set (`FAULT_MODEL`, `FAULT_TOO_LARGE`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> str:
        """The text sent to clients as the status details."""
        return self.message

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata sent with the status: the fault mark, when there is one."""
        return ((FAULT_KEY, self.fault),) if self.fault else ()


class InvalidArgument(LivecalcError):
    """The request is malformed; optionally names the offending fields."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, violations: tuple[FieldViolation, ...] = ()) -> None:
        super().__init__(message)
        self.violations = violations

    def details(self) -> str:
        if not self.violations:
            return self.message
        fields = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        return f"{self.message} ({fields})"


class NotFound(LivecalcError):
    """A named resource (dataset, job, package) does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(LivecalcError):
    """A resource with that name exists and overwriting was not asked for."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(LivecalcError):
    """The system is not in a state the request needs (e.g. the dataset changed)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(LivecalcError):
    """A limit was hit: memory cap, message size, quota."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(LivecalcError):
    """Work ran past its time limit and was stopped."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(LivecalcError):
    """Work was cancelled by its caller."""

    code = grpc.StatusCode.CANCELLED


class Unavailable(LivecalcError):
    """A peer service could not be reached; retrying may help."""

    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(LivecalcError):
    """The caller presented no or invalid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(LivecalcError):
    """The caller is known but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unimplemented(LivecalcError):
    """The method exists in the contract but is not built yet."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(LivecalcError):
    """An invariant broke inside the service (a bug, or a model that trapped)."""

    code = grpc.StatusCode.INTERNAL


# ---- the client's side: statuses as these errors ----
_BY_CODE: Final[dict[grpc.StatusCode, type[LivecalcError]]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        DeadlineExceeded,
        Cancelled,
        Unavailable,
        Unauthenticated,
        PermissionDenied,
        Unimplemented,
        Internal,
    )
}

#: Status codes worth retrying for an idempotent call: the peer was not reached or was restarting.
RETRYABLE: Final = frozenset({grpc.StatusCode.UNAVAILABLE})


def error_for(code: grpc.StatusCode, message: str) -> LivecalcError:
    """The project's error for a status code (`LivecalcError` itself for codes it has no class for)."""
    message = " ".join(message.split()) or code.name
    cls = _BY_CODE.get(code)
    if cls is None:
        err = LivecalcError(f"{code.name.lower()}: {message}")
        err.code = code
        return err
    return cls(message)


def from_rpc_error(exc: grpc.RpcError, service: str, address: str) -> LivecalcError:
    """The one-line error for a failed call; UNAVAILABLE says what could not be reached."""
    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError | grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.aio.AioRpcError | grpc.Call) else None) or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"cannot reach the {service} service at {address}: {' '.join(details.split())}")
    return error_for(code, details)


class JobFailed(LivecalcError):
    """A job ended with an error event; `code` is the status the job failed with."""

    def __init__(self, job_id: str, code_name: str, message: str) -> None:
        super().__init__(f"job {job_id} failed: {code_name}: {message}")
        self.job_id = job_id
        self.code = getattr(grpc.StatusCode, code_name, grpc.StatusCode.UNKNOWN)


class JobCancelled(Cancelled):
    """A job ended cancelled (by CancelJob) before it had a result."""

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(f"job {job_id} was cancelled" + (f": {reason}" if reason else ""))
        self.job_id = job_id
