"""Refusals that recur on every engine carry a fault mark the gateway can act on (issue 19,
items 5 and 9), over a real EngineServicer on an in-process gRPC server.

- A model that loops for ever is interrupted after the engine's limit per call, well before a
  dispatcher's stall limit: DEADLINE_EXCEEDED naming the model, the function and the limit,
  trailing metadata ``livecalc-fault: model``.
- A scenario count that can never fit the engine's memory (10,000,000 or 4,294,967,295) is
  RESOURCE_EXHAUSTED naming the need and the cap, ``livecalc-fault: too-large``, refused
  before anything huge is allocated; an engine busy with other chunks refuses without a mark.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np
import pyarrow as pa
import pytest
import wasmtime
from grpc import aio
from prometheus_client import CollectorRegistry

from livecalc.engine.v1 import engine_pb2, engine_service_pb2, engine_service_pb2_grpc
from services.common.config import ServerConfig
from services.common.errors import FAULT_KEY, FAULT_MODEL, FAULT_TOO_LARGE, InvalidArgument
from services.common.server import RunningServer, ServiceBinding, start_server
from services.engine.assumption_assets import lifelib_sample_assumptions
from services.engine.metrics import EngineMetrics
from services.engine.model_points import synthetic_policies
from services.engine.package_cache import PackageCache
from services.engine.package_loader import LoadedPackage, PackageLoader
from services.engine.pipeline import plan
from services.engine.reference_inputs import term_life_assets, term_life_interface
from services.engine.row_reader import RowReader, Sample
from services.engine.runtime import Runtime
from services.engine.server import ENGINE_SERVICE, add_arguments, resolve_engine_config
from services.engine.servicer import EngineConfig, EngineServicer
from services.engine.workers import DEFAULT_CALL_TIME_LIMIT, WasmPool
from services.valuation.packages.config import REFERENCE_PIPELINE
from services.valuation.policies import Policies
from services.valuation.reference_model import shipped_models

PIECE_LIMIT = 1.0
"""The engine's limit per model call in these tests (the default is 45 s)."""

LOOP = bytes(
    wasmtime.wat2wasm(
        """(module (import "env" "memory" (memory 1 65535 shared))
        (global (export "__heap_base") i32 (i32.const 0))
        (func (export "lc_abi_version") (result i32) (i32.const 2))
        (func (export "lc_prepare_scenarios") (param i32 i32 i32) (result i32) (loop $l (br $l)) (i32.const 0)))"""
    )
)


def policy_table(policies: Policies) -> pa.Table:
    """The dataset rows (the data service's columns) of ``policies``."""
    return pa.table(
        {
            "policy_id": policies.policy_id,
            "age_at_entry": policies.age_at_entry.astype(np.int64),
            "sex": np.where(policies.female.astype(bool), "F", "M"),
            "policy_term": policies.policy_term.astype(np.int64),
            "policy_count": policies.policy_count,
            "sum_assured": policies.sum_assured,
            "duration_mth": policies.duration_mth.astype(np.int64),
            "premium_pp": pa.array(policies.premium_pp, from_pandas=True),  # NaN: an empty cell
        }
    )


class Packages:
    """A package source with one package per hash (the PackageLoader's place)."""

    def __init__(self, packages: dict[str, LoadedPackage], cache: PackageCache) -> None:
        self.packages = packages
        self.cache = cache

    async def get(self, package_hash: str, address: str = "", *, tenant: str = "") -> tuple[LoadedPackage, bool]:
        return self.packages[package_hash], True

    def cached_hashes(self) -> list[str]:
        return list(self.packages)


class Rows:
    """One dataset's rows (the RowReader's place)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def acting_for(self, tenant: str) -> Rows:
        return self

    async def row_count(self, dataset_id: str, version: str) -> int:
        return int(self.table.num_rows)

    async def read(
        self, dataset_id: str, version: str, start_row: int, end_row: int, *, columns: Sequence[str] = ()
    ) -> pa.Table:
        return self.table.slice(start_row, end_row - start_row)

    async def sample(self, dataset_id: str, version: str, n: int, seed: int, *, columns: Sequence[str] = ()) -> Sample:
        raise NotImplementedError


def package(name: str, binaries: dict[str, bytes]) -> LoadedPackage:
    return LoadedPackage(
        package_hash=name,
        name=name,
        version="1",
        nodes=tuple(plan(REFERENCE_PIPELINE)),
        binaries=binaries,
        interface=term_life_interface(),
        assets=term_life_assets(lifelib_sample_assumptions()),
        scenario_defaults={},
        archive_bytes=0,
    )


@dataclass
class Engine:
    server: RunningServer
    servicer: EngineServicer
    pool: WasmPool

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    config = EngineConfig(
        threads=1, slots=1, data_address="", gateway_address="", cache_dir=tmp_path, package_cache_bytes=1 << 20,
        piece_blocks=1, time_limit_seconds=60.0, piece_time_limit_seconds=PIECE_LIMIT,
    )  # fmt: skip
    pool = WasmPool(Runtime(), threads=config.threads, call_time_limit=config.piece_time_limit_seconds)
    packages = Packages(
        {"good": package("good", shipped_models()), "loops": package("loops", shipped_models() | {"esg": LOOP})},
        PackageCache(tmp_path / "packages", 1 << 20),
    )
    rows = Rows(policy_table(synthetic_policies(300, 3)))
    servicer = EngineServicer(
        config, pool, cast(PackageLoader, packages), cast(RowReader, rows), EngineMetrics.create(CollectorRegistry())
    )
    binding = ServiceBinding(
        ENGINE_SERVICE, lambda s: engine_service_pb2_grpc.add_EngineServiceServicer_to_server(servicer, s)
    )
    server = await start_server(ServerConfig("engine", grace_seconds=1.0, drain_seconds=0.0), [binding])
    try:
        yield Engine(server, servicer, pool)
    finally:
        await server.stop()
        pool.close()


def request(package_hash: str, scenarios: int) -> engine_service_pb2.RunChunkRequest:
    return engine_service_pb2.RunChunkRequest(
        job_id="j",
        chunk_id=1,
        package_hash=package_hash,
        dataset_id="d",
        dataset_version="v",
        scenarios=engine_pb2.ScenarioSpec(count=scenarios, seed=1),
        blocks=engine_pb2.BlockRange(first_block=0, block_count=1),
    )


async def refusal(address: str, message: engine_service_pb2.RunChunkRequest) -> tuple[aio.AioRpcError, float]:
    """The status a RunChunk call ends with (it must end with one) and the seconds it took."""
    started = time.monotonic()
    async with aio.insecure_channel(address) as channel:
        call = engine_service_pb2_grpc.EngineServiceStub(channel).RunChunk(message, timeout=60)
        try:
            async for _ in call:
                pass
        except aio.AioRpcError as exc:
            return exc, time.monotonic() - started
        finally:
            call.cancel()
    raise AssertionError("the chunk succeeded")


def fault(exc: aio.AioRpcError) -> str | None:
    marks: Any = exc.trailing_metadata() or ()
    values = [value for key, value in marks if key == FAULT_KEY]
    assert len(values) <= 1
    return values[0] if values else None


async def results(address: str, message: engine_service_pb2.RunChunkRequest) -> list[bytes]:
    async with aio.insecure_channel(address) as channel:
        call = engine_service_pb2_grpc.EngineServiceStub(channel).RunChunk(message, timeout=60)
        return [r.partial.SerializeToString() async for r in call if r.WhichOneof("event") == "partial"]


@pytest.mark.anyio
async def test_a_looping_model_is_blamed_within_the_piece_limit(engine: Engine) -> None:
    good = await results(engine.address, request("good", 8))
    exc, seconds = await refusal(engine.address, request("loops", 8))
    assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    details = exc.details() or ""
    assert "'esg'" in details and "lc_prepare_scenarios" in details and f"{PIECE_LIMIT:g} s" in details, details
    assert fault(exc) == FAULT_MODEL
    assert seconds < PIECE_LIMIT + 3.0  # the limit, a tick, and the call's set-up
    # the engine is fine afterwards: same bits as before
    assert await results(engine.address, request("good", 8)) == good


@pytest.mark.anyio
@pytest.mark.parametrize("count", [10_000_000, 4_294_967_295])
async def test_a_count_that_can_never_fit_is_too_large(engine: Engine, count: int) -> None:
    exc, seconds = await refusal(engine.address, request("good", count))
    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert fault(exc) == FAULT_TOO_LARGE
    details = exc.details() or ""
    cap = engine.pool.memory.cap
    assert str(cap) in details and "GetCapabilities.memory_limit_bytes" in details, details
    need = int(next(word for word in details.split() if word.isdigit() and int(word) > cap))
    assert need > cap
    assert seconds < 10.0
    # nothing was laid out, let alone allocated: the memory is still the worker stacks only
    assert engine.pool.memory.size <= engine.pool.memory.run_base + (1 << 16)


@pytest.mark.anyio
async def test_a_busy_engine_refuses_without_a_mark(engine: Engine) -> None:
    engine.servicer._busy = engine.servicer.config.slots  # every slot taken by other chunks
    try:
        exc, _ = await refusal(engine.address, request("good", 8))
    finally:
        engine.servicer._busy = 0
    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert fault(exc) is None


def test_the_piece_limit_comes_from_the_flag_else_the_environment(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--cache-dir", str(tmp_path / "cache"), "--state-dir", str(tmp_path / "state")]
    assert resolve_engine_config(parser.parse_args(base), {}).piece_time_limit_seconds == DEFAULT_CALL_TIME_LIMIT
    env = {"LIVECALC_ENGINE_PIECE_TIME_LIMIT": "7.5", "LIVECALC_ENGINE_MEMORY_KEEP_MB": "32"}
    from_env = resolve_engine_config(parser.parse_args(base), env)
    assert (from_env.piece_time_limit_seconds, from_env.memory_keep_bytes) == (7.5, 32 << 20)
    assert from_env.state_dir == tmp_path / "state"
    flagged = resolve_engine_config(parser.parse_args([*base, "--piece-time-limit", "3"]), env)
    assert flagged.piece_time_limit_seconds == 3.0
    with pytest.raises(InvalidArgument, match="> 0"):
        resolve_engine_config(parser.parse_args([*base, "--piece-time-limit", "0"]), {})
