"""`livecalc serve engine`: configuration and assembly of the engine's gRPC surface.

EngineService runs chunks on one `WasmPool` of K threads (``--threads``), takes ``--slots``
chunks at once, reads policy rows from the data service (``--data``, default the local data
port) and packages from the gateway's PackageService (``--gateway``, when a request names no
address), and keeps downloaded packages and compiled modules under ``--cache-dir`` (the key
that signs the compiled modules under ``--state-dir``, apart from them). Each model call may run
``--piece-time-limit`` seconds. Flags win
over the environment, which wins over defaults; the environment is read here only.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from livecalc.engine.v1 import engine_service_pb2, engine_service_pb2_grpc
from services.common.auth.service import internal_channel_security, service_credentials
from services.common.config import DEFAULT_PORTS
from services.common.errors import InvalidArgument
from services.common.server import ServiceBinding
from services.common.service import ServiceParts
from services.engine.memory import DEFAULT_KEEP
from services.engine.metrics import EngineMetrics
from services.engine.package_cache import PackageCache
from services.engine.package_loader import PackageLoader
from services.engine.row_reader import RowReader
from services.engine.runtime import Runtime, RuntimeConfig, cache_key_file, default_state_dir, usable_cache_dir
from services.engine.servicer import EngineConfig, EngineServicer
from services.engine.workers import DEFAULT_CALL_TIME_LIMIT, WasmPool

ENGINE_SERVICE = engine_service_pb2.DESCRIPTOR.services_by_name["EngineService"].full_name
T = TypeVar("T")
DEFAULT_SLOTS = 2
DEFAULT_PACKAGE_CACHE_MB = 512
DEFAULT_TIME_LIMIT_SECONDS = 3600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, help="worker threads per chunk (env LIVECALC_ENGINE_THREADS; default: cores)"
    )
    parser.add_argument(
        "--slots", type=int, help=f"chunks taken at once (env LIVECALC_ENGINE_SLOTS; default {DEFAULT_SLOTS})"
    )
    parser.add_argument(
        "--data",
        help="data service address HOST:PORT "
        f"(env LIVECALC_DATA_ADDRESS; default 127.0.0.1:{DEFAULT_PORTS['data'][0]})",
    )
    parser.add_argument(
        "--gateway",
        help="PackageService address used when a chunk names none "
        f"(env LIVECALC_GATEWAY_ADDRESS; default 127.0.0.1:{DEFAULT_PORTS['gateway'][0]})",
    )
    parser.add_argument(
        "--cache-dir", help="compiled modules and packages (env LIVECALC_ENGINE_CACHE_DIR; default ~/.cache/livecalc)"
    )
    parser.add_argument(
        "--package-cache-mb",
        type=int,
        help="bound of the on-disk package cache in MiB "
        f"(env LIVECALC_ENGINE_PACKAGE_CACHE_MB; default {DEFAULT_PACKAGE_CACHE_MB})",
    )
    parser.add_argument(
        "--piece-blocks",
        type=int,
        help="blocks computed per pipeline run inside a chunk (env LIVECALC_ENGINE_PIECE_BLOCKS; default 4·threads)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        help="default chunk time limit in seconds "
        f"(env LIVECALC_ENGINE_TIME_LIMIT; default {DEFAULT_TIME_LIMIT_SECONDS:g})",
    )

    parser.add_argument(
        "--piece-time-limit",
        type=float,
        help="seconds one model call on a piece may run before the model is blamed (DEADLINE_EXCEEDED, "
        "livecalc-fault: model); keep it under the gateway's stall limit "
        f"(env LIVECALC_ENGINE_PIECE_TIME_LIMIT; default {DEFAULT_CALL_TIME_LIMIT:g})",
    )
    parser.add_argument(
        "--memory-keep-mb",
        type=int,
        help="a run that grew the engine's memory past this many MiB is followed by a fresh, small memory "
        f"(env LIVECALC_ENGINE_MEMORY_KEEP_MB; default {DEFAULT_KEEP >> 20})",
    )
    parser.add_argument(
        "--state-dir",
        help="the engine's secrets (the key that signs cached modules), outside --cache-dir "
        "(env LIVECALC_ENGINE_STATE_DIR; default ~/.local/state/livecalc)",
    )


def _value(flag: T | None, env: Mapping[str, str], key: str, parse: Callable[[str], T], default: T) -> T:
    if flag is not None:
        return flag
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError:
        raise InvalidArgument(f"environment variable {key} must be a {parse.__name__}, got {raw!r}") from None


def resolve_engine_config(args: argparse.Namespace, env: Mapping[str, str]) -> EngineConfig:
    """Flags win over LIVECALC_* variables, which win over defaults."""

    def flag(name: str) -> Any:
        return getattr(args, name, None)

    threads = _value(flag("threads"), env, "LIVECALC_ENGINE_THREADS", int, os.cpu_count() or 1)
    cache = _value(flag("cache_dir"), env, "LIVECALC_ENGINE_CACHE_DIR", str, "")
    cache_mb = _value(flag("package_cache_mb"), env, "LIVECALC_ENGINE_PACKAGE_CACHE_MB", int, DEFAULT_PACKAGE_CACHE_MB)
    keep_mb = _value(flag("memory_keep_mb"), env, "LIVECALC_ENGINE_MEMORY_KEEP_MB", int, DEFAULT_KEEP >> 20)
    state = _value(flag("state_dir"), env, "LIVECALC_ENGINE_STATE_DIR", str, "")
    return EngineConfig(
        threads=threads,
        slots=_value(flag("slots"), env, "LIVECALC_ENGINE_SLOTS", int, DEFAULT_SLOTS),
        data_address=_value(flag("data"), env, "LIVECALC_DATA_ADDRESS", str, f"127.0.0.1:{DEFAULT_PORTS['data'][0]}"),
        gateway_address=_value(
            flag("gateway"), env, "LIVECALC_GATEWAY_ADDRESS", str, f"127.0.0.1:{DEFAULT_PORTS['gateway'][0]}"
        ),
        cache_dir=usable_cache_dir(Path(cache) if cache else None),
        package_cache_bytes=cache_mb << 20,
        piece_blocks=_value(flag("piece_blocks"), env, "LIVECALC_ENGINE_PIECE_BLOCKS", int, 4 * threads),
        time_limit_seconds=_value(
            flag("time_limit"), env, "LIVECALC_ENGINE_TIME_LIMIT", float, DEFAULT_TIME_LIMIT_SECONDS
        ),
        piece_time_limit_seconds=_value(
            flag("piece_time_limit"), env, "LIVECALC_ENGINE_PIECE_TIME_LIMIT", float, DEFAULT_CALL_TIME_LIMIT
        ),
        memory_keep_bytes=keep_mb << 20,
        state_dir=Path(state) if state else default_state_dir(),
    )


async def build(args: argparse.Namespace, env: Mapping[str, str], registry: CollectorRegistry) -> ServiceParts:
    config = resolve_engine_config(args, env)
    metrics = EngineMetrics.create(registry)
    key_file = cache_key_file(config.state_dir) if config.state_dir is not None else None
    runtime = Runtime(
        RuntimeConfig(cache_dir=config.cache_dir, key_file=key_file),
        on_cache_rejected=lambda reason: metrics.module_cache_rejected.labels(reason).inc(),
    )
    pool = WasmPool(
        runtime,
        threads=config.threads,
        memory_keep=config.memory_keep_bytes,
        call_time_limit=config.piece_time_limit_seconds,
    )
    cache = PackageCache(config.cache_dir / "packages", config.package_cache_bytes)
    # the mesh's own calls: a service token (when auth is on) and TLS (when configured)
    credentials = service_credentials("engine", args, env)
    channels = internal_channel_security(args, env)
    loader = PackageLoader(
        pool, cache, metrics, default_address=config.gateway_address, credentials=credentials, security=channels
    )
    reader = RowReader(config.data_address, credentials=credentials, security=channels)
    engine = EngineServicer(config, pool, loader, reader, metrics)

    async def stop() -> None:
        await loader.close()
        await reader.close()
        pool.close()

    return ServiceParts(
        bindings=[
            ServiceBinding(
                ENGINE_SERVICE, lambda s: engine_service_pb2_grpc.add_EngineServiceServicer_to_server(engine, s)
            )
        ],
        on_stop=[stop],
    )
