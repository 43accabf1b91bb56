"""`AsyncClient` of the client distribution (`livecalc_client.aio`), with package directories
built by the full distribution's package builder (`services.valuation.packages`)."""

from __future__ import annotations

from pathlib import Path

from livecalc_client.aio import (
    DEFAULT_DATA,
    DEFAULT_GATEWAY,
    FINAL_EVENTS,
    UPLOAD_CHUNK,
    AsyncClient,
    ResultAssembler,
    collect_result,
    job_spec,
    package_archive,
    use_package_builder,
)
from services.valuation.packages.package import build_directory

__all__ = [
    "DEFAULT_DATA",
    "DEFAULT_GATEWAY",
    "FINAL_EVENTS",
    "UPLOAD_CHUNK",
    "AsyncClient",
    "ResultAssembler",
    "collect_result",
    "job_spec",
    "package_archive",
]


def build_package_directory(path: Path) -> bytes:
    """A package directory's archive, reproducible (``createdAt`` 0)."""
    archive, _ = build_directory(path, source_date_epoch=0)
    return archive


use_package_builder(build_package_directory)
