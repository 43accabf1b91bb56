"""The audit log: one JSON line per mutating RPC and per denied request.

Each line carries time (UTC, ISO 8601), subject, tenant, action, object, outcome and the
request id. The file is opened in append mode and each line is written with a single
`os.write` on an O_APPEND descriptor, so lines from concurrent RPCs (or processes) never
interleave; there is no fsync (an audit line may be lost in a power cut, never torn by a
crash of this process). `livecalc_audit_events_total{action,outcome}` counts the same events
on the server's registry.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter


@dataclass(frozen=True)
class AuditEvent:
    subject: str
    tenant: str
    action: str
    object: str
    #: "ok", or the status the RPC ended with ("unauthenticated", "permission_denied", …).
    outcome: str
    request_id: str

    def line(self, now: datetime | None = None) -> str:
        stamp = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        record = {
            "time": stamp,
            "subject": self.subject,
            "tenant": self.tenant,
            "action": self.action,
            "object": self.object,
            "outcome": self.outcome,
            "request_id": self.request_id,
        }
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"


class AuditLog:
    """Appends audit lines to a file and/or stdout and counts them; `close()` when done."""

    def __init__(self, registry: CollectorRegistry, path: Path | None, *, stdout: bool = False) -> None:
        self.path = path
        self._stdout = stdout
        self._fd: int | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.events = Counter(
            "livecalc_audit_events",
            "Audited actions (mutating RPCs and denied requests) by action and outcome.",
            ["action", "outcome"],
            registry=registry,
        )

    def record(self, event: AuditEvent) -> None:
        data = event.line().encode()
        if self._fd is not None:
            os.write(self._fd, data)  # one write on O_APPEND: the line lands whole
        if self._stdout:
            sys.stdout.write(data.decode())
            sys.stdout.flush()
        self.events.labels(event.action, event.outcome).inc()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
