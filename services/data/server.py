"""`livecalc serve data`: configuration and assembly of the data service.

The environment is read here only (`build`); everything below receives frozen config.
The backend is the local root directory unless an Azure connection string and container
are given (flags or LIVECALC_DATA_AZURE_CONNECTION_STRING / LIVECALC_DATA_AZURE_CONTAINER).
Memory limits (limits.py) come from flags, then LIVECALC_DATA_* variables, then defaults.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread
from prometheus_client import CollectorRegistry

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from services.common.errors import InvalidArgument
from services.common.server import ServiceBinding
from services.common.service import ServiceParts
from services.common.storage.azure_blob import AzureBlobStorage, AzureConfig
from services.common.storage.base import Storage
from services.common.storage.local import LocalStorage
from services.data.catalog import Catalog
from services.data.limits import MIB, DataLimits
from services.data.metrics import DataMetrics, MeteredStorage, StorageMetrics
from services.data.servicer import DataServicer

#: Worker threads for parsing and file I/O. Few on purpose: more threads than cores only
#: contend for the GIL, and the event loop (health checks included) waits behind them.
WORKER_THREADS = 4
DATA_SERVICE = data_service_pb2.DESCRIPTOR.services_by_name["DataService"].full_name
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataConfig:
    """Where the data service keeps datasets: a local root, or an Azure container."""

    root: Path
    azure: AzureConfig | None = None
    limits: DataLimits = field(default_factory=DataLimits)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        help="dataset directory (env LIVECALC_DATA_ROOT; default $LIVECALC_DATA_DIR/datasets or ./.livecalc/datasets)",
    )
    parser.add_argument(
        "--azure-connection-string",
        help="serve datasets from Azure Blob (env LIVECALC_DATA_AZURE_CONNECTION_STRING)",
    )
    parser.add_argument("--azure-container", help="blob container of the datasets (env LIVECALC_DATA_AZURE_CONTAINER)")
    defaults = DataLimits()
    for flag, _, unit, default, help_text in _LIMIT_FLAGS:
        shown = default(defaults)
        parser.add_argument(
            f"--{flag}", type=float if unit == 0 else int, help=f"{help_text} (env {_env_name(flag)}; default {shown})"
        )


#: (flag, DataLimits field, bytes per unit (0: seconds), default as shown, help)
_LIMIT_FLAGS: tuple[tuple[str, str, int, Callable[[DataLimits], object], str], ...] = (
    (
        "memory-budget-mb",
        "memory_budget_bytes",
        MIB,
        lambda d: d.memory_budget_bytes // MIB,
        "memory all reads may hold",
    ),
    ("max-row-bytes", "max_row_bytes", 1, lambda d: d.max_row_bytes, "longest CSV line accepted"),
    ("max-sample-mb", "max_sample_bytes", MIB, lambda d: d.max_sample_bytes // MIB, "row data one sample may hold"),
    ("max-message-rows", "max_message_rows", 1, lambda d: d.max_message_rows, "rows per ReadRows message"),
    ("admission-wait-seconds", "admission_wait_seconds", 0, lambda d: d.admission_wait_seconds, "wait for memory"),
)


def _env_name(flag: str) -> str:
    return "LIVECALC_DATA_" + flag.upper().replace("-", "_")


def resolve_limits(args: argparse.Namespace, env: Mapping[str, str]) -> DataLimits:
    """Flags win over LIVECALC_DATA_* variables, which win over DataLimits' defaults."""
    values: dict[str, float | int] = {}
    for flag, name, unit, _, _ in _LIMIT_FLAGS:
        raw: object = getattr(args, flag.replace("-", "_"), None)
        if raw is None:
            text = env.get(_env_name(flag), "")
            if not text:
                continue
            try:
                raw = float(text) if unit == 0 else int(text)
            except ValueError:
                raise InvalidArgument(
                    f"environment variable {_env_name(flag)} must be a number, got {text!r}"
                ) from None
        assert isinstance(raw, int | float)
        values[name] = float(raw) if unit == 0 else int(raw) * unit
    return DataLimits(**values)  # type: ignore[arg-type]


def resolve_data_config(args: argparse.Namespace, env: Mapping[str, str]) -> DataConfig:
    """Flags win over the environment, which wins over defaults."""
    root = getattr(args, "root", None) or env.get("LIVECALC_DATA_ROOT")
    if not root:
        base = env.get("LIVECALC_DATA_DIR") or ".livecalc"
        root = str(Path(base) / "datasets")
    conn = getattr(args, "azure_connection_string", None) or env.get("LIVECALC_DATA_AZURE_CONNECTION_STRING")
    container = getattr(args, "azure_container", None) or env.get("LIVECALC_DATA_AZURE_CONTAINER")
    azure = None
    if conn or container:
        if not (conn and container):
            raise InvalidArgument("Azure Blob needs both a connection string and a container name")
        if not 3 <= len(container) <= 63:
            raise InvalidArgument(f"Azure container names have 3 to 63 characters, got {container!r}")
        azure = AzureConfig(connection_string=conn, container=container)
    return DataConfig(root=Path(root), azure=azure, limits=resolve_limits(args, env))


async def open_storage(config: DataConfig) -> Storage:
    if config.azure is not None:
        return await AzureBlobStorage.open(config.azure)
    local = LocalStorage(config.root)
    removed = local.remove_stale_uploads()
    if removed:
        log.info("removed stale uploads", extra={"fields": {"count": removed}})
    return local


async def build(args: argparse.Namespace, env: Mapping[str, str], registry: CollectorRegistry) -> ServiceParts:
    config = resolve_data_config(args, env)
    anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
    storage = MeteredStorage(await open_storage(config), StorageMetrics.create(registry))
    servicer = DataServicer(
        Catalog(storage, max_row_bytes=config.limits.max_row_bytes),
        limits=config.limits,
        metrics=DataMetrics.create(registry),
    )
    where = config.azure.container if config.azure is not None else str(config.root)
    log.info("datasets", extra={"fields": {"source": "azure_blob" if config.azure else "local", "at": where}})
    return ServiceParts(
        bindings=[
            ServiceBinding(DATA_SERVICE, lambda s: data_service_pb2_grpc.add_DataServiceServicer_to_server(servicer, s))
        ],
        on_stop=[storage.close],
    )
