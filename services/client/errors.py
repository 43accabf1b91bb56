"""gRPC statuses as the project's error types (services.common.errors), for client code.

A failed call raises the `LivecalcError` subclass of its status code (NOT_FOUND → `NotFound`,
INVALID_ARGUMENT → `InvalidArgument`, …) with the server's message on one line; UNAVAILABLE
names the service and address that could not be reached. A job that ends with an error event
raises the same way (`JobFailed` carries the job id), and a cancelled job raises `JobCancelled`.
"""

from __future__ import annotations

from typing import Final

import grpc

from services.common import errors as e

_BY_CODE: Final[dict[grpc.StatusCode, type[e.LivecalcError]]] = {
    cls.code: cls
    for cls in (
        e.InvalidArgument,
        e.NotFound,
        e.AlreadyExists,
        e.FailedPrecondition,
        e.ResourceExhausted,
        e.DeadlineExceeded,
        e.Cancelled,
        e.Unavailable,
        e.Unauthenticated,
        e.PermissionDenied,
        e.Unimplemented,
        e.Internal,
    )
}

#: Status codes worth retrying for an idempotent call: the peer was not reached or was restarting.
RETRYABLE: Final = frozenset({grpc.StatusCode.UNAVAILABLE})


def error_for(code: grpc.StatusCode, message: str) -> e.LivecalcError:
    """The project's error for a status code (`LivecalcError` itself for codes it has no class for)."""
    message = " ".join(message.split()) or code.name
    cls = _BY_CODE.get(code)
    if cls is None:
        err = e.LivecalcError(f"{code.name.lower()}: {message}")
        err.code = code
        return err
    return cls(message)


def from_rpc_error(exc: grpc.RpcError, service: str, address: str) -> e.LivecalcError:
    """The one-line error for a failed call; UNAVAILABLE says what could not be reached."""
    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError | grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.aio.AioRpcError | grpc.Call) else None) or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return e.Unavailable(f"cannot reach the {service} service at {address}: {' '.join(details.split())}")
    return error_for(code, details)


class JobFailed(e.LivecalcError):
    """A job ended with an error event; `code` is the status the job failed with."""

    def __init__(self, job_id: str, code_name: str, message: str) -> None:
        super().__init__(f"job {job_id} failed: {code_name}: {message}")
        self.job_id = job_id
        self.code = getattr(grpc.StatusCode, code_name, grpc.StatusCode.UNKNOWN)


class JobCancelled(e.Cancelled):
    """A job ended cancelled (by CancelJob) before it had a result."""

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(f"job {job_id} was cancelled" + (f": {reason}" if reason else ""))
        self.job_id = job_id
