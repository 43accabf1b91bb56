"""The engine's package loader against a gateway (its real PackageService on loopback in this
process, tests.inprocess): one download for concurrent requests, a bounded LRU disk cache,
re-verification of cached archives, and a pipeline run from the downloaded package equal, bit
for bit, to the run from the shipped models."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from services.common.errors import NotFound, Unavailable
from services.engine.metrics import EngineMetrics
from services.engine.package_cache import PackageCache
from services.engine.package_loader import PackageLoader
from services.engine.pipeline import PipelineRunner, RunInputs
from services.engine.reference_inputs import term_life_records
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.valuation.packages.config import REFERENCE_PIPELINE
from tests.engine.mesh import stochastic_package, upload_package
from tests.engine.wasm_helpers import DYN_LAPSE_BETA, inputs, twin_arguments
from tests.inprocess import threaded_mesh
from tests.support import free_port


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, bytes]]:
    """The gateway's address, the uploaded package's hash and its archive."""
    tmp = tmp_path_factory.mktemp("loader")
    archive = stochastic_package(tmp / "model")
    with threaded_mesh(tmp) as mesh:
        yield mesh.gateway, upload_package(mesh.gateway, archive), archive


@pytest.fixture(scope="module")
def pool() -> Iterator[WasmPool]:
    with WasmPool(Runtime(), threads=2) as p:
        yield p


def loader_at(pool: WasmPool, cache_dir: Path, address: str, limit: int = 64 << 20) -> PackageLoader:
    return PackageLoader(
        pool, PackageCache(cache_dir, limit), EngineMetrics.create(CollectorRegistry()), default_address=address
    )


def test_cache_is_bounded_in_bytes_and_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = PackageCache(tmp_path, limit_bytes=250)
    a, b, c = ("a" * 64, "b" * 64, "c" * 64)
    assert cache.put(a, b"1" * 100) and cache.put(b, b"2" * 100)
    assert cache.get(a) == b"1" * 100  # a is now the most recently used
    assert cache.put(c, b"3" * 100)
    assert cache.hashes() == [c, a] and cache.size_bytes == 200
    assert not (tmp_path / f"{b}.zip").exists()
    assert not cache.put("d" * 64, b"4" * 300)  # larger than the whole cache: not kept
    again = PackageCache(tmp_path, limit_bytes=250)  # survives a restart, recency included
    assert set(again.hashes()) == {a, c} and again.get(c) == b"3" * 100
    assert cache.get("../../etc/passwd") is None


@pytest.mark.anyio
async def test_concurrent_requests_download_once_and_run_bit_for_bit(
    gateway: tuple[str, str, bytes], pool: WasmPool, tmp_path: Path
) -> None:
    address, package_hash, archive = gateway
    loader = loader_at(pool, tmp_path, address)
    try:
        got = await asyncio.gather(*(loader.get(package_hash) for _ in range(6)))
        assert loader.downloads == 1
        loaded = got[0][0]
        assert all(g[0] is loaded for g in got) and not got[0][1]
        assert (tmp_path / f"{package_hash}.zip").read_bytes() == archive
        parameters = dict(zip((p.name for p in loaded.interface.parameters), loaded.assets.parameters, strict=True))
        assert parameters["dyn_lapse_beta"] == DYN_LAPSE_BETA
        assert loaded.interface.output_list.primary_name == "net_cf"
        assert [n.engine for n in loaded.nodes] == ["wasm://esg", "wasm://term_life"]
        again, cached = await loader.get(package_hash)
        assert again is loaded and cached and loader.downloads == 1
    finally:
        await loader.close()
    shipped_inputs = inputs(2 * 1024 - 100, 17)  # lifelib's tables with β = 25, as the package's
    policies, _ = twin_arguments(shipped_inputs)
    run_inputs = RunInputs(
        loaded.interface,
        term_life_records(policies, loaded.assets, loaded.interface),
        loaded.assets,
        shipped_inputs.scenarios,
    )
    from_package = PipelineRunner(pool, loaded.binaries).run(loaded.nodes, run_inputs)
    shipped = PipelineRunner(pool).run(REFERENCE_PIPELINE, shipped_inputs)
    assert from_package.partials.tobytes() == shipped.partials.tobytes()


@pytest.mark.anyio
async def test_disk_cache_serves_without_the_gateway_and_tampering_costs_a_download(
    gateway: tuple[str, str, bytes], pool: WasmPool, tmp_path: Path
) -> None:
    address, package_hash, archive = gateway
    first = loader_at(pool, tmp_path, address)
    await first.get(package_hash)
    await first.close()
    nowhere = f"127.0.0.1:{free_port()}"
    offline = loader_at(pool, tmp_path, nowhere)
    try:
        _, cached = await offline.get(package_hash)
        assert cached and offline.downloads == 0
        with pytest.raises(Unavailable):
            await offline.get("0" * 64)
    finally:
        await offline.close()
    (tmp_path / f"{package_hash}.zip").write_bytes(archive[:-10] + b"x" * 10)
    fresh = loader_at(pool, tmp_path, address)
    try:
        _, cached = await fresh.get(package_hash)
        assert not cached and fresh.downloads == 1
        assert (tmp_path / f"{package_hash}.zip").read_bytes() == archive
        with pytest.raises(NotFound):
            await fresh.get("0" * 64)
    finally:
        await fresh.close()
