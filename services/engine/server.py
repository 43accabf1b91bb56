"""`livecalc serve engine`: configuration and assembly of the engine's gRPC surface.

EngineService runs chunks on one `WasmPool` of K threads (``--threads``), takes ``--slots``
chunks at once, reads policy rows from the data service (``--data``, default the local data
port) and packages from the gateway's PackageService (``--gateway``, when a request names no
address), and keeps downloaded packages and compiled modules under ``--cache-dir`` (the key
that signs the compiled modules under ``--state-dir``, apart from them). Each model call may run
``--piece-time-limit`` seconds. Each setting is declared once below (flag, variable, default,
help); flags win over the environment, which wins over defaults; the environment is read here only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from livecalc.engine.v1 import engine_service_pb2, engine_service_pb2_grpc
from services.common.auth.service import internal_channel_security, service_credentials
from services.common.config import DEFAULT_PORTS
from services.common.server import ServiceBinding
from services.common.service import ServiceParts
from services.common.settings import Setting
from services.engine.memory import DEFAULT_KEEP
from services.engine.metrics import EngineMetrics
from services.engine.package_cache import PackageCache
from services.engine.package_loader import PackageLoader
from services.engine.row_reader import RowReader
from services.engine.runtime import Runtime, RuntimeConfig, cache_key_file, default_state_dir, usable_cache_dir
from services.engine.servicer import EngineConfig, EngineServicer
from services.engine.workers import DEFAULT_CALL_TIME_LIMIT, WasmPool

ENGINE_SERVICE = engine_service_pb2.DESCRIPTOR.services_by_name["EngineService"].full_name
DEFAULT_SLOTS = 2
DEFAULT_PACKAGE_CACHE_MB = 512
DEFAULT_TIME_LIMIT_SECONDS = 3600.0


_DATA = f"127.0.0.1:{DEFAULT_PORTS['data'][0]}"
_GATEWAY = f"127.0.0.1:{DEFAULT_PORTS['gateway'][0]}"
THREADS: Setting[int | None] = Setting(
    "LIVECALC_ENGINE_THREADS", int, None, flag="--threads", help="worker threads per chunk", shown="cores"
)
SLOTS = Setting("LIVECALC_ENGINE_SLOTS", int, DEFAULT_SLOTS, flag="--slots", help="chunks taken at once")
DATA_ADDRESS = Setting("LIVECALC_DATA_ADDRESS", str, _DATA, flag="--data", help="data service address HOST:PORT")
GATEWAY_ADDRESS = Setting(
    "LIVECALC_GATEWAY_ADDRESS",
    str,
    _GATEWAY,
    flag="--gateway",
    help="PackageService address used when a chunk names none",
)
CACHE_DIR: Setting[str | None] = Setting(
    "LIVECALC_ENGINE_CACHE_DIR",
    str,
    None,
    flag="--cache-dir",
    help="compiled modules and packages",
    shown="~/.cache/livecalc",
)
PACKAGE_CACHE_MB = Setting(
    "LIVECALC_ENGINE_PACKAGE_CACHE_MB",
    int,
    DEFAULT_PACKAGE_CACHE_MB,
    flag="--package-cache-mb",
    help="bound of the on-disk package cache in MiB",
)
PIECE_BLOCKS: Setting[int | None] = Setting(
    "LIVECALC_ENGINE_PIECE_BLOCKS",
    int,
    None,
    flag="--piece-blocks",
    help="blocks computed per pipeline run inside a chunk (at 16 scenarios or more; fewer scenarios get larger pieces)",
    shown="4·threads",
)
TIME_LIMIT = Setting(
    "LIVECALC_ENGINE_TIME_LIMIT",
    float,
    DEFAULT_TIME_LIMIT_SECONDS,
    flag="--time-limit",
    help="default chunk time limit in seconds",
)
PIECE_TIME_LIMIT = Setting(
    "LIVECALC_ENGINE_PIECE_TIME_LIMIT",
    float,
    DEFAULT_CALL_TIME_LIMIT,
    flag="--piece-time-limit",
    help="seconds one model call on a piece may run before the model is blamed (DEADLINE_EXCEEDED, "
    "livecalc-fault: model); keep it under the gateway's stall limit",
)
MEMORY_KEEP_MB = Setting(
    "LIVECALC_ENGINE_MEMORY_KEEP_MB",
    int,
    DEFAULT_KEEP >> 20,
    flag="--memory-keep-mb",
    help="a run that grew the engine's memory past this many MiB is followed by a fresh, small memory",
)
STATE_DIR: Setting[str | None] = Setting(
    "LIVECALC_ENGINE_STATE_DIR",
    str,
    None,
    flag="--state-dir",
    help="the engine's secrets (the key that signs cached modules), outside --cache-dir",
    shown="~/.local/state/livecalc",
)
SETTINGS: tuple[Setting[Any], ...] = (
    THREADS,
    SLOTS,
    DATA_ADDRESS,
    GATEWAY_ADDRESS,
    CACHE_DIR,
    PACKAGE_CACHE_MB,
    PIECE_BLOCKS,
    TIME_LIMIT,
    PIECE_TIME_LIMIT,
    MEMORY_KEEP_MB,
    STATE_DIR,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for setting in SETTINGS:
        setting.add_argument(parser)


def resolve_engine_config(args: argparse.Namespace, env: Mapping[str, str]) -> EngineConfig:
    """Flags win over LIVECALC_* variables, which win over defaults."""
    threads = THREADS.read(args, env)
    threads = (os.cpu_count() or 1) if threads is None else threads
    cache = CACHE_DIR.read(args, env)
    state = STATE_DIR.read(args, env)
    piece_blocks = PIECE_BLOCKS.read(args, env)
    return EngineConfig(
        threads=threads,
        slots=SLOTS.read(args, env),
        data_address=DATA_ADDRESS.read(args, env),
        gateway_address=GATEWAY_ADDRESS.read(args, env),
        cache_dir=usable_cache_dir(Path(cache) if cache else None),
        package_cache_bytes=PACKAGE_CACHE_MB.read(args, env) << 20,
        piece_blocks=4 * threads if piece_blocks is None else piece_blocks,
        time_limit_seconds=TIME_LIMIT.read(args, env),
        piece_time_limit_seconds=PIECE_TIME_LIMIT.read(args, env),
        memory_keep_bytes=MEMORY_KEEP_MB.read(args, env) << 20,
        state_dir=Path(state) if state else default_state_dir(),
    )


async def build(args: argparse.Namespace, env: Mapping[str, str], registry: CollectorRegistry) -> ServiceParts:
    """The engine's servicer over what it owns (services.common.lifecycle): the WASM pool, the package
    loader's channels and the row reader's, closed newest first when the server stops, or at once
    when assembly fails half-way."""
    config = resolve_engine_config(args, env)
    metrics = EngineMetrics.create(registry)
    key_file = cache_key_file(config.state_dir) if config.state_dir is not None else None
    runtime = Runtime(
        RuntimeConfig(cache_dir=config.cache_dir, key_file=key_file),
        on_cache_rejected=lambda reason: metrics.module_cache_rejected.labels(reason).inc(),
    )
    async with contextlib.AsyncExitStack() as stack:
        pool = WasmPool(
            runtime,
            threads=config.threads,
            memory_keep=config.memory_keep_bytes,
            call_time_limit=config.piece_time_limit_seconds,
        )
        stack.callback(pool.close)
        cache = PackageCache(config.cache_dir / "packages", config.package_cache_bytes)
        # the mesh's own calls: a service token (when auth is on) and TLS (when configured)
        credentials = service_credentials("engine", args, env)
        channels = internal_channel_security(args, env)
        loader = PackageLoader(
            pool, cache, metrics, default_address=config.gateway_address, credentials=credentials, security=channels
        )
        stack.push_async_callback(loader.close)
        reader = RowReader(config.data_address, credentials=credentials, security=channels)
        stack.push_async_callback(reader.close)
        engine = EngineServicer(config, pool, loader, reader, metrics)
        owned = stack.pop_all()
    return ServiceParts(
        bindings=[
            ServiceBinding(
                ENGINE_SERVICE, lambda s: engine_service_pb2_grpc.add_EngineServiceServicer_to_server(engine, s)
            )
        ],
        on_stop=[owned.aclose],
    )
