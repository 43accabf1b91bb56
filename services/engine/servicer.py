"""EngineService: RunChunk and GetCapabilities over the engine's pool, loader and row reader.

An engine runs at most ``slots`` chunks at once and answers RESOURCE_EXHAUSTED beyond (a
transient refusal: no fault mark); a chunk whose scenario count can never fit the engine's
memory cap is refused up front, RESOURCE_EXHAUSTED marked ``livecalc-fault: too-large``. All
chunks share one `WasmPool` of K threads, computing one at a time in arrival order while the
others read their package and rows (see chunk_runner). A chunk whose job reads its scenarios
from a dataset (`ScenarioSpec.dataset_id`) gets them from the engine's cache of scenario sets,
read once per engine (scenario_sets.py). A chunk may also ask for detail (per-policy values,
cash flows by month: chunk_detail.py); it then runs only the scenarios that detail needs.
Errors leave as the project's error types, which the server interceptor maps to statuses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from livecalc.engine.v1 import engine_pb2, engine_service_pb2, engine_service_pb2_grpc
from services.common.auth.interceptor import current_principal
from services.common.errors import InvalidArgument, LivecalcError, ResourceExhausted
from services.common.metrics import code_label
from services.engine.chunk_detail import DetailAsk
from services.engine.chunk_runner import ChunkRunner, ChunkStats, ChunkWork
from services.engine.errors import ModelMemoryExceeded
from services.engine.footprint import least_engine_bytes, max_scenarios
from services.engine.memory import DEFAULT_KEEP
from services.engine.metrics import EngineMetrics
from services.engine.package_loader import LoadedPackage, PackageLoader
from services.engine.row_reader import RowReader, TenantRows
from services.engine.runtime import wasmtime_version
from services.engine.scenario_sets import DEFAULT_CACHE_BYTES, ScenarioSet, ScenarioSetCache, SetRequest
from services.engine.workers import DEFAULT_CALL_TIME_LIMIT, RunControl, WasmPool
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.model_abi import ABI_VERSION
from services.valuation.packages.config import PYTHON_BUILTINS

log = logging.getLogger(__name__)

SPEED_WINDOW = 32
"""Pieces over which the engine's steps/s is measured."""


@dataclass(frozen=True)
class EngineConfig:
    """How an engine runs: resolved from flags, environment and defaults in `server.build`."""

    threads: int
    slots: int
    data_address: str
    gateway_address: str
    cache_dir: Path
    package_cache_bytes: int
    piece_blocks: int
    time_limit_seconds: float
    piece_time_limit_seconds: float = DEFAULT_CALL_TIME_LIMIT
    """Seconds one model call (on a piece's blocks or scenarios) may run before the model is blamed."""
    memory_keep_bytes: int = DEFAULT_KEEP
    """A run that grew the engine's memory past this is followed by a fresh, small memory."""
    state_dir: Path | None = None
    """Where the engine keeps its secrets (the module-cache key); never inside ``cache_dir``."""
    scenario_cache_bytes: int = DEFAULT_CACHE_BYTES
    """Bytes of scenario sets read from datasets that the engine keeps for later chunks."""

    def __post_init__(self) -> None:
        if self.threads < 1 or self.slots < 1 or self.piece_blocks < 1:
            raise InvalidArgument("engine threads, slots and piece blocks must be ≥ 1")
        if self.time_limit_seconds <= 0 or self.piece_time_limit_seconds <= 0:
            raise InvalidArgument("the engine's chunk and piece time limits must be > 0 seconds")
        if self.memory_keep_bytes < 0:
            raise InvalidArgument("the engine's kept memory must be ≥ 0 bytes")


def engine_version() -> str:
    try:
        return metadata.version("livecalc-mesh")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


class EngineServicer(engine_service_pb2_grpc.EngineServiceServicer):
    """The engine's gRPC surface (see the module docstring)."""

    def __init__(
        self,
        config: EngineConfig,
        pool: WasmPool,
        loader: PackageLoader,
        reader: RowReader,
        metrics: EngineMetrics,
    ) -> None:
        self.config = config
        self.pool = pool
        self.loader = loader
        self.reader = reader
        self.metrics = metrics
        self.runner = ChunkRunner(pool, metrics, piece_blocks=config.piece_blocks, on_speed=self._measured)
        self.scenario_sets = ScenarioSetCache(config.scenario_cache_bytes)
        self._busy = 0
        self._speed: deque[tuple[int, float]] = deque(maxlen=SPEED_WINDOW)
        metrics.slots.set(config.slots)

    def _measured(self, steps: int, seconds: float) -> None:
        if steps > 0 and seconds > 0:
            self._speed.append((steps, seconds))

    @property
    def steps_per_second(self) -> float:
        seconds = sum(s for _, s in self._speed)
        return sum(n for n, _ in self._speed) / seconds if seconds > 0 else 0.0

    @staticmethod
    def _check(request: engine_service_pb2.RunChunkRequest) -> None:
        """Refuse a malformed request before any download or read."""
        if not request.dataset_id:
            raise InvalidArgument("dataset_id is required")
        if request.block_size not in (0, BLOCK_SIZE):
            raise InvalidArgument(f"block_size must be {BLOCK_SIZE} (the reference block size B) or 0")
        if request.threads < 0 or request.time_limit_seconds < 0:
            raise InvalidArgument("threads and time_limit_seconds must be ≥ 0")
        if not request.HasField("scenarios") or request.scenarios.count < 1:
            raise InvalidArgument("scenarios.count must be ≥ 1")
        which = request.WhichOneof("selection")
        if which is None:
            raise InvalidArgument("a selection is required: blocks or sample")
        if which == "blocks" and (request.blocks.block_count < 1 or request.blocks.first_block < 0):
            raise InvalidArgument("blocks.first_block must be ≥ 0 and blocks.block_count ≥ 1")
        if which == "sample" and request.sample.n < 1:
            raise InvalidArgument("sample.n must be ≥ 1")
        if which == "sample" and not 0 <= request.sample.group_rows <= BLOCK_SIZE:
            raise InvalidArgument(f"sample.group_rows must be in 0..{BLOCK_SIZE}")
        if request.HasField("detail"):
            if which != "blocks":
                raise InvalidArgument("detail is answered for a blocks selection only")
            DetailAsk.from_request(request.detail, request.scenarios.count)

    def _check_fits(self, scenarios: int) -> None:
        """Refuse, before any download, read or allocation, a count whose smallest run (one block
        of one policy over one month) exceeds this engine's memory cap: no retry can help."""
        need = least_engine_bytes(scenarios, threads=self.pool.threads)
        cap = self.pool.memory.cap
        if need > cap:
            raise ModelMemoryExceeded(
                f"{scenarios} scenarios need at least {need} bytes of engine memory (one block, one month); "
                f"this engine's cap is {cap} bytes (GetCapabilities.memory_limit_bytes)"
            )

    @staticmethod
    def _work(request: engine_service_pb2.RunChunkRequest, package: LoadedPackage) -> ChunkWork:
        spec = request.scenarios
        ask = DetailAsk.from_request(request.detail, spec.count) if request.HasField("detail") else None
        scenarios = package.scenarios(
            spec.count if ask is None else ask.run_window(spec.count)[1],
            spec.seed,
            spec.mean_reversion if spec.HasField("mean_reversion") else None,
            spec.volatility if spec.HasField("volatility") else None,
            spec.include_base if spec.HasField("include_base") else None,
        )
        if request.WhichOneof("selection") == "sample":
            return ChunkWork(request.dataset_id, request.dataset_version, scenarios,
                             sample_n=request.sample.n, sample_seed=request.sample.seed,
                             sample_group_rows=request.sample.group_rows)  # fmt: skip
        return ChunkWork(request.dataset_id, request.dataset_version, scenarios,
                         first_block=request.blocks.first_block, block_count=request.blocks.block_count,
                         detail=ask, job_scenarios=spec.count)  # fmt: skip

    async def _scenario_set(
        self, request: engine_service_pb2.RunChunkRequest, package: LoadedPackage, rows: TenantRows, tenant: str
    ) -> ScenarioSet:
        """The chunk's scenario inputs read from its scenario set (cached; see scenario_sets.py)."""
        spec = request.scenarios
        wanted = SetRequest(spec.dataset_id, spec.dataset_version, spec.count, spec.months,
                            tuple(s.name for s in package.interface.scenario_inputs))  # fmt: skip
        cap = self.pool.memory.cap
        if wanted.nbytes > cap:
            raise ModelMemoryExceeded(
                f"scenario set {spec.dataset_id}: {spec.count} scenarios × {spec.months} months × "
                f"{len(wanted.inputs)} inputs need {wanted.nbytes} bytes; this engine's memory cap is {cap} bytes"
            )
        return await self.scenario_sets.get(rows, tenant, wanted)

    async def RunChunk(
        self, request: engine_service_pb2.RunChunkRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[engine_service_pb2.RunChunkResponse]:
        if self._busy >= self.config.slots:
            self.metrics.chunks.labels("ResourceExhausted").inc()
            raise ResourceExhausted(
                f"engine busy: {self._busy} of {self.config.slots} slots in use (GetCapabilities.slots)"
            )
        self._busy += 1
        self.metrics.busy_slots.set(self._busy)
        started = time.monotonic()
        code = "OK"
        limit = request.time_limit_seconds or self.config.time_limit_seconds
        remaining = context.time_remaining()
        if remaining is not None:
            limit = min(limit, remaining)
        control = RunControl(deadline=started + limit)
        fields = {"job": request.job_id, "chunk": request.chunk_id, "package": request.package_hash[:12]}
        try:
            self._check(request)
            self._check_fits(request.scenarios.count)
            # The chunk reads as the job's tenant: the gateway's call acts for it (roles.ACT_FOR_TENANT).
            tenant = current_principal().tenant
            package, cached = await self.loader.get(request.package_hash, request.package_address, tenant=tenant)
            work = self._work(request, package)
            rows_of = self.reader.acting_for(tenant)
            if request.scenarios.dataset_id:
                work = replace(work, scenario_set=await self._scenario_set(request, package, rows_of, tenant))
            rows = 0 if work.is_sample else await rows_of.row_count(work.dataset_id, work.dataset_version)
            stats = ChunkStats()
            async for message in self.runner.run(package, work, rows_of, rows, control=control, stats=stats):
                yield message
            elapsed = time.monotonic() - started
            log.info("chunk done", extra={"fields": {**fields, "blocks": stats.blocks, "s": round(elapsed, 3)}})
            yield engine_service_pb2.RunChunkResponse(
                summary=engine_pb2.ChunkSummary(
                    blocks=stats.blocks,
                    policies=stats.policies,
                    steps=stats.steps,
                    elapsed_seconds=elapsed,
                    threads=self.pool.threads,
                    read_wait_seconds=stats.read_wait_seconds,
                    package_cached=cached,
                )
            )
        except (asyncio.CancelledError, GeneratorExit):
            control.cancel.set()  # stops WASM still in flight (epoch interruption)
            code = code_label(grpc.StatusCode.CANCELLED)
            log.info("chunk cancelled", extra={"fields": fields})
            raise
        except LivecalcError as exc:
            code = code_label(exc.code)
            control.cancel.set()
            raise
        except BaseException:
            code = code_label(grpc.StatusCode.INTERNAL)
            control.cancel.set()
            raise
        finally:
            self._busy -= 1
            self.metrics.busy_slots.set(self._busy)
            self.metrics.chunks.labels(code).inc()
            self.metrics.chunk_seconds.observe(time.monotonic() - started)

    async def GetCapabilities(
        self, request: engine_service_pb2.GetCapabilitiesRequest, context: aio.ServicerContext[Any, Any]
    ) -> engine_service_pb2.GetCapabilitiesResponse:
        cache = self.loader.cache
        return engine_service_pb2.GetCapabilitiesResponse(
            engine_version=engine_version(),
            wasmtime_version=wasmtime_version(),
            abi_version=ABI_VERSION,
            simd=True,
            shared_memory=True,
            threads=self.pool.threads,
            cpu_count=os.cpu_count() or 1,
            memory_limit_bytes=self.pool.memory.cap,
            max_scenarios=max_scenarios(self.pool.memory.cap, threads=self.pool.threads),
            cached_packages=self.loader.cached_hashes(),
            node_engines=["wasm", "python"],
            python_nodes=list(PYTHON_BUILTINS),
            slots=self.config.slots,
            busy_slots=self._busy,
            measured_steps_per_second=self.steps_per_second,
            package_cache_bytes=cache.size_bytes,
            package_cache_limit_bytes=cache.limit_bytes,
        )
