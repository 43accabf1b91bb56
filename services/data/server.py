"""`livecalc serve data`: configuration and assembly of the data service.

The environment is read here only (`build`); everything below receives frozen config.
The backend is the local root directory unless an Azure connection string and container
are given (flags or LIVECALC_DATA_AZURE_CONNECTION_STRING / LIVECALC_DATA_AZURE_CONTAINER).
Memory limits (limits.py) come from flags, then LIVECALC_DATA_* variables, then defaults; each
setting is declared once below (services.common.settings).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from prometheus_client import CollectorRegistry

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from services.common.server import ServiceBinding
from services.common.service import ServiceParts
from services.common.settings import Setting, data_dir
from services.common.storage.location import StorageLocation, StorageSettings
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
    """Where the data service keeps datasets (a local root, or an Azure container) and its memory limits."""

    location: StorageLocation
    limits: DataLimits = field(default_factory=DataLimits)


ROOT: Setting[str | None] = Setting(
    "LIVECALC_DATA_ROOT",
    str,
    None,
    flag="--root",
    help="dataset directory",
    shown="$LIVECALC_DATA_DIR/datasets or ./.livecalc/datasets",
)
AZURE_CONNECTION_STRING: Setting[str | None] = Setting(
    "LIVECALC_DATA_AZURE_CONNECTION_STRING",
    str,
    None,
    flag="--azure-connection-string",
    help="serve datasets from Azure Blob",
)
AZURE_CONTAINER: Setting[str | None] = Setting(
    "LIVECALC_DATA_AZURE_CONTAINER", str, None, flag="--azure-container", help="blob container of the datasets"
)
STORAGE = StorageSettings(ROOT, AZURE_CONNECTION_STRING, AZURE_CONTAINER)


def _limit(flag: str, parse: type[int] | type[float], shown: object, help_text: str) -> Setting[Any]:
    """A memory limit: unset unless given, so DataLimits' own default applies (and is shown)."""
    env = "LIVECALC_DATA_" + flag.upper().replace("-", "_")
    return Setting(env, parse, None, flag=f"--{flag}", help=help_text, shown=str(shown))


_DEFAULTS = DataLimits()
#: (setting, DataLimits field, bytes per unit: 0 for seconds)
_LIMITS: tuple[tuple[Setting[Any], str, int], ...] = (
    (
        _limit("memory-budget-mb", int, _DEFAULTS.memory_budget_bytes // MIB, "memory all reads may hold"),
        "memory_budget_bytes",
        MIB,
    ),
    (_limit("max-row-bytes", int, _DEFAULTS.max_row_bytes, "longest CSV line accepted"), "max_row_bytes", 1),
    (
        _limit("max-sample-mb", int, _DEFAULTS.max_sample_bytes // MIB, "row data one sample may hold"),
        "max_sample_bytes",
        MIB,
    ),
    (_limit("max-message-rows", int, _DEFAULTS.max_message_rows, "rows per ReadRows message"), "max_message_rows", 1),
    (
        _limit("admission-wait-seconds", float, _DEFAULTS.admission_wait_seconds, "wait for memory"),
        "admission_wait_seconds",
        0,
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    STORAGE.add_arguments(parser)
    for limit, _, _ in _LIMITS:
        limit.add_argument(parser)


def resolve_limits(args: argparse.Namespace, env: Mapping[str, str]) -> DataLimits:
    """Flags win over LIVECALC_DATA_* variables, which win over DataLimits' defaults."""
    values: dict[str, float | int] = {}
    for setting, name, unit in _LIMITS:
        value = setting.read(args, env)
        if value is not None:
            values[name] = float(value) if unit == 0 else int(value) * unit
    return DataLimits(**values)  # type: ignore[arg-type]


def resolve_data_config(args: argparse.Namespace, env: Mapping[str, str]) -> DataConfig:
    """Flags win over the environment, which wins over defaults (the root: under the data dir)."""
    return DataConfig(location=STORAGE.resolve(args, env, data_dir(env) / "datasets"), limits=resolve_limits(args, env))


async def build(args: argparse.Namespace, env: Mapping[str, str], registry: CollectorRegistry) -> ServiceParts:
    """The data servicer over the storage it opens and owns (services.common.lifecycle): closed when
    the server stops, or at once when assembly fails after it opened."""
    config = resolve_data_config(args, env)
    anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
    async with contextlib.AsyncExitStack() as stack:
        storage = MeteredStorage(await config.location.open(), StorageMetrics.create(registry))
        stack.push_async_callback(storage.close)
        servicer = DataServicer(
            Catalog(storage, max_row_bytes=config.limits.max_row_bytes),
            limits=config.limits,
            metrics=DataMetrics.create(registry),
        )
        owned = stack.pop_all()
    log.info("datasets", extra={"fields": {"source": storage.kind, "at": config.location.where}})
    return ServiceParts(
        bindings=[
            ServiceBinding(DATA_SERVICE, lambda s: data_service_pb2_grpc.add_DataServiceServicer_to_server(servicer, s))
        ],
        on_stop=[owned.aclose],
    )
