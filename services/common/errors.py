"""The one error tree of LiveCalc Mesh, defined in the client distribution (`livecalc_client.errors`)
so that the services and the light client raise and catch the same classes.

Expected failures (bad input, unknown ids, limits, deadlines) are raised as subclasses of
`LivecalcError`; each carries the gRPC status code it maps to. The server interceptor in
`services.common.interceptors` turns them into statuses in one place; any other exception
is a bug, logged with its traceback and answered as INTERNAL. `LivecalcError.fault` marks
whose fault a refusal is (`FAULT_KEY`, `FAULT_MODEL`, `FAULT_TOO_LARGE`).
"""

from __future__ import annotations

from livecalc_client.errors import (
    FAULT_KEY,
    FAULT_MODEL,
    FAULT_TOO_LARGE,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    LivecalcError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)

__all__ = [
    "FAULT_KEY",
    "FAULT_MODEL",
    "FAULT_TOO_LARGE",
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "LivecalcError",
    "NotFound",
    "OutputClosed",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]


class OutputClosed(Exception):
    """stdout's reader went away (a closed pipe); nothing more can be printed."""
