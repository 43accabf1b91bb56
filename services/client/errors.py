"""gRPC statuses as the project's error types, from the client distribution (`livecalc_client.errors`)."""

from __future__ import annotations

from livecalc_client.errors import RETRYABLE, JobCancelled, JobFailed, error_for, from_rpc_error

__all__ = ["RETRYABLE", "JobCancelled", "JobFailed", "error_for", "from_rpc_error"]
