"""What one SubmitJob may carry, and when a repeated submission is the same job.

`check_spec` is the job spec's own rules (job.proto says what each field means): required
fields, counts that must be positive, a preview's sample no larger than the dataset.

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
from services.common.errors import FieldViolation, InvalidArgument

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


def check_spec(spec: job_pb2.JobSpec, *, dataset_rows: int | None = None) -> None:
    """INVALID_ARGUMENT naming every field of ``spec`` that breaks its rules; with
    ``dataset_rows`` (once the dataset is known), also a preview sample larger than the dataset."""
    bad = []
    if spec.chunk_blocks < 0:
        bad.append(FieldViolation("spec.chunk_blocks", "must be ≥ 0"))
    if spec.threads < 0:
        bad.append(FieldViolation("spec.threads", "must be ≥ 0"))
    if not spec.dataset_id:
        bad.append(FieldViolation("spec.dataset_id", "is required"))
    if not spec.package_hash:
        bad.append(FieldViolation("spec.package_hash", "is required"))
    if spec.HasField("scenarios") and spec.scenarios.count == 0 and not spec.scenarios.dataset_id:
        bad.append(FieldViolation("spec.scenarios.count", "must be ≥ 1 (leave scenarios out for the package's own)"))
    if spec.HasField("preview"):
        if spec.preview.sample_rows < 1:
            bad.append(FieldViolation("spec.preview.sample_rows", "must be ≥ 1"))
        elif dataset_rows is not None and spec.preview.sample_rows > dataset_rows:
            bad.append(FieldViolation("spec.preview.sample_rows", f"must be ≤ the dataset's {dataset_rows} rows"))
    if bad:
        raise InvalidArgument("invalid job spec", tuple(bad))


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
