"""What one SubmitJob may carry, and when a repeated submission is the same job.

Labels and idempotency keys are stored with every job and every job record goes out in
ListJobs pages, so their sizes are bounded here (a page of `store.MAX_PAGE` jobs stays well
under gRPC's 4 MiB message limit). An idempotency key names one spec: the same key with the
same spec answers the job it started, the same key with another spec is refused, naming the
fields that differ (`spec_differences`).
"""

from __future__ import annotations

from typing import Any, Final

from google.protobuf.message import Message

from livecalc.gateway.v1 import job_pb2
from services.common.errors import FieldViolation

#: Labels one job may carry.
MAX_LABELS: Final = 32
#: Bytes (UTF-8) of one label key and of one label value.
MAX_LABEL_KEY_BYTES: Final = 63
MAX_LABEL_VALUE_BYTES: Final = 255
#: Bytes (UTF-8) of all of a job's label keys and values together.
MAX_LABELS_BYTES: Final = 4096
#: Bytes (UTF-8) of an idempotency key.
MAX_IDEMPOTENCY_KEY_BYTES: Final = 256


def _size(text: str) -> int:
    return len(text.encode())


def limit_violations(spec: job_pb2.JobSpec, idempotency_key: str) -> list[FieldViolation]:
    """The request's fields over their size limits (each violation names its limit)."""
    bad = []
    if _size(idempotency_key) > MAX_IDEMPOTENCY_KEY_BYTES:
        bad.append(
            FieldViolation(
                "idempotency_key", f"is {_size(idempotency_key)} bytes; at most {MAX_IDEMPOTENCY_KEY_BYTES} are allowed"
            )
        )
    labels = dict(spec.labels)
    if len(labels) > MAX_LABELS:
        bad.append(FieldViolation("spec.labels", f"has {len(labels)} labels; at most {MAX_LABELS} are allowed"))
    total = 0
    for key in sorted(labels):
        value = labels[key]
        total += _size(key) + _size(value)
        if _size(key) > MAX_LABEL_KEY_BYTES:
            bad.append(
                FieldViolation(
                    f"spec.labels[{_short(key)}]",
                    f"key is {_size(key)} bytes; at most {MAX_LABEL_KEY_BYTES} are allowed",
                )
            )
        if _size(value) > MAX_LABEL_VALUE_BYTES:
            bad.append(
                FieldViolation(
                    f"spec.labels[{_short(key)}]",
                    f"value is {_size(value)} bytes; at most {MAX_LABEL_VALUE_BYTES} are allowed",
                )
            )
    if total > MAX_LABELS_BYTES:
        bad.append(
            FieldViolation(
                "spec.labels", f"keys and values are {total} bytes together; at most {MAX_LABELS_BYTES} are allowed"
            )
        )
    return bad


def _short(value: object, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def spec_differences(recorded: Message, requested: Message, prefix: str = "spec") -> list[str]:
    """The fields (dotted paths, with both values where short) in which two messages of one
    type differ; message fields are compared field by field, maps and lists whole."""
    out: list[str] = []
    for field in recorded.DESCRIPTOR.fields:
        path = f"{prefix}.{field.name}"
        old: Any = getattr(recorded, field.name)
        new: Any = getattr(requested, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if dict(old) != dict(new):
                out.append(path)
        elif field.is_repeated:
            if list(old) != list(new):
                out.append(path)
        elif field.has_presence and recorded.HasField(field.name) != requested.HasField(field.name):
            out.append(f"{path} ({'set' if recorded.HasField(field.name) else 'unset'} for the existing job)")
        elif field.message_type is not None:
            out += spec_differences(old, new, path)
        elif old != new:
            out.append(f"{path} ({_short(old)} for the existing job, {_short(new)} now)")
    return out
