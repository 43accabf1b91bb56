"""The engine's package loader: a package hash in, a runnable model out.

`PackageLoader.get(hash, address)` returns a `LoadedPackage` (pipeline nodes in run order,
WASM binaries compiled and checked by the sandbox, the model's declared interface and the
tables and parameters it declares, read from the package's files, scenario defaults). Where the
archive comes from, in order:

1. memory: the last few loaded packages;
2. the on-disk `PackageCache` under the engine's cache dir (bounded, LRU);
3. a download from the gateway's PackageService (``DownloadPackage``) at ``address``.

Whatever the source, the archive goes through `services.valuation.packages.verify_archive`
(safe unpack, manifest, packageHash recomputed, content checks) and its packageHash must be
the one asked for: the engine runs whatever WASM a package carries, but only a package that
is exactly the one named. Concurrent requests for one package share one load (one download).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import anyio
import grpc
from grpc import aio

from livecalc.gateway.v1 import package_service_pb2, package_service_pb2_grpc
from services.common.auth.service import ServiceCredentials
from services.common.client import ChannelSecurity, open_aio_channel
from services.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    LivecalcError,
    NotFound,
    Unavailable,
)
from services.engine.metrics import EngineMetrics
from services.engine.package_cache import PackageCache
from services.engine.pipeline import plan
from services.engine.workers import WasmPool
from services.valuation.interface.declaration import AM, ModelInterface
from services.valuation.interface.parser import interface_of
from services.valuation.interface.tables import Assets, load_assets
from services.valuation.packages.archive import PackageLimits
from services.valuation.packages.config import Node as PipelineNode
from services.valuation.packages.config import pipeline_of
from services.valuation.packages.package import Package, verify_archive
from services.valuation.packages.report import PackageInvalid
from services.valuation.scenarios import ScenarioParams

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_SECONDS = 60.0
MAX_RECEIVE_BYTES = 8 << 20


@dataclass(frozen=True)
class LoadedPackage:
    """A verified package, ready to run: what `PipelineRunner.run` needs besides the policies."""

    package_hash: str
    name: str
    version: str
    nodes: tuple[PipelineNode, ...]
    binaries: Mapping[str, bytes]
    interface: ModelInterface
    assets: Assets
    scenario_defaults: Mapping[str, Any]
    archive_bytes: int

    def scenarios(self, count: int, seed: int, a: float | None, sigma: float | None,
                  include_base: bool | None) -> ScenarioParams:  # fmt: skip
        """Scenario parameters of a run: the request's, else the package's defaults, else docs/model.md's."""
        d = self.scenario_defaults
        return ScenarioParams(
            count=count,
            seed=seed,
            a=float(a if a is not None else d.get("a", 0.1)),
            sigma=float(sigma if sigma is not None else d.get("sigma", 0.01)),
            include_base=bool(include_base if include_base is not None else d.get("include_base", True)),
        )


def build_loaded(package: Package, pool: WasmPool) -> LoadedPackage:
    """Pipeline, compiled binaries and assumptions of a verified package (CPU work: call in a thread)."""
    config = package.config
    nodes = tuple(plan([n.as_json() for n in pipeline_of(config)]))
    binaries: dict[str, bytes] = {}
    for node in nodes:
        if node.scheme == "wasm" and node.model not in binaries:
            wasm = package.files.get(f"wasm/{node.model}.wasm")
            if wasm is None:  # verify_archive checks this; kept as an invariant
                raise Internal(f"package {package.package_hash}: wasm/{node.model}.wasm is missing")
            pool.load(node.model, wasm)  # compiles through the runtime's module cache and checks it
            binaries[node.model] = wasm
    if "interface" not in config:
        raise InvalidArgument(
            f"package {package.package_hash} declares no model interface (an ABI v1 package): build it again "
            "from `livecalc package init` (docs/model-interface.md)"
        )
    try:
        interface = interface_of(config)
    except ValueError as exc:
        raise InvalidArgument(f"package {package.package_hash}: {exc}") from exc
    am = [t.name for t in interface.tables if t.file.startswith(AM)]
    am += [p.name for p in interface.parameters if (p.file or "").startswith(AM)]
    if am:
        raise FailedPrecondition(
            f"package {package.package_hash} takes {', '.join(am)} from an Assumptions Manager (am://), "
            "and none is configured"
        )
    try:
        assets = load_assets(interface, package.files.get)
    except PackageInvalid as exc:
        problems = "; ".join(str(i) for i in exc.issues if i.severity == "error")
        raise InvalidArgument(f"package {package.package_hash}: {problems}") from exc
    scenarios = config.get("scenarios", {})
    return LoadedPackage(
        package_hash=package.package_hash,
        name=str(config.get("name", "")),
        version=str(config.get("version", "")),
        nodes=nodes,
        binaries=binaries,
        interface=interface,
        assets=assets,
        scenario_defaults=scenarios if isinstance(scenarios, dict) else {},
        archive_bytes=0,
    )


class PackageLoader:
    """Loads packages by hash (memory → disk cache → PackageService); see the module docstring.

    Runs on the event loop; verification and compilation run in worker threads.
    """

    def __init__(
        self,
        pool: WasmPool,
        cache: PackageCache,
        metrics: EngineMetrics,
        *,
        default_address: str,
        memory_entries: int = 8,
        limits: PackageLimits | None = None,
        credentials: ServiceCredentials | None = None,
        security: ChannelSecurity | None = None,
    ) -> None:
        #: The engine's service token (DownloadPackage) and the channels' TLS.
        self.credentials = credentials or ServiceCredentials()
        self.security = security or ChannelSecurity()
        self._pool = pool
        self.cache = cache
        self._metrics = metrics
        self._default_address = default_address
        self._memory: OrderedDict[str, LoadedPackage] = OrderedDict()
        self._memory_entries = memory_entries
        self._limits = limits
        self._loading: dict[str, asyncio.Task[tuple[LoadedPackage, bool]]] = {}
        self._channels: dict[str, aio.Channel] = {}
        self.downloads = 0
        metrics.package_cache_bytes.set(cache.size_bytes)

    def cached_hashes(self) -> list[str]:
        """Packages this engine holds (memory or disk), most recently used first."""
        return list(dict.fromkeys([*reversed(self._memory), *self.cache.hashes()]))

    async def get(self, package_hash: str, address: str = "", *, tenant: str = "") -> tuple[LoadedPackage, bool]:
        """The loaded package and whether it came from a cache (memory or disk).

        A download acts for ``tenant`` (the job's), whose package the gateway checked the
        job's hash to be; the caches are by hash, which names the verified content.
        """
        package_hash = package_hash.strip().lower()
        if len(package_hash) != 64 or any(c not in "0123456789abcdef" for c in package_hash):
            raise InvalidArgument(f"package_hash must be 64 lower-case hex digits, got {package_hash!r}")
        loaded = self._memory.get(package_hash)
        if loaded is not None:
            self._memory.move_to_end(package_hash)
            self._metrics.package_cache_hits.inc()
            return loaded, True
        task = self._loading.get(package_hash)
        if task is None:
            task = asyncio.ensure_future(self._load(package_hash, address or self._default_address, tenant))
            self._loading[package_hash] = task
            task.add_done_callback(lambda _t: self._loading.pop(package_hash, None))
        # shielded: one caller's cancellation must not cancel the load the others wait for
        return await asyncio.shield(task)

    async def _load(self, package_hash: str, address: str, tenant: str) -> tuple[LoadedPackage, bool]:
        archive = await anyio.to_thread.run_sync(self.cache.get, package_hash)
        cached = archive is not None
        if archive is not None:
            try:
                loaded = await self._verify(package_hash, archive)
            except InvalidArgument:
                log.warning(
                    "cached package failed verification; downloading it again",
                    extra={"fields": {"package": package_hash}},
                )
                self.cache.discard(package_hash)
                archive, cached = None, False
        if archive is None:
            archive = await self._download(package_hash, address, tenant)
            loaded = await self._verify(package_hash, archive)
            await anyio.to_thread.run_sync(self.cache.put, package_hash, archive)
        (self._metrics.package_cache_hits if cached else self._metrics.package_cache_misses).inc()
        self._metrics.package_cache_bytes.set(self.cache.size_bytes)
        self._memory[package_hash] = loaded
        while len(self._memory) > self._memory_entries:
            self._memory.popitem(last=False)
        return loaded, cached

    async def _verify(self, package_hash: str, archive: bytes) -> LoadedPackage:
        def work() -> LoadedPackage:
            package = verify_archive(archive, self._limits)
            if package.package_hash != package_hash:
                raise InvalidArgument(f"the package served as {package_hash} has packageHash {package.package_hash}")
            loaded = build_loaded(package, self._pool)
            return replace(loaded, archive_bytes=len(archive))

        return await anyio.to_thread.run_sync(work)

    def _channel(self, address: str) -> aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = open_aio_channel(
                address, self.security, options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)]
            )
            self._channels[address] = channel
        return channel

    async def _download(self, package_hash: str, address: str, tenant: str) -> bytes:
        self.downloads += 1
        stub = package_service_pb2_grpc.PackageServiceStub(self._channel(address))
        call = stub.DownloadPackage(
            package_service_pb2.DownloadPackageRequest(package_hash=package_hash),
            timeout=DOWNLOAD_TIMEOUT_SECONDS,
            metadata=self.credentials.metadata(tenant),
        )
        parts: list[bytes] = []
        got = 0
        size, digest = -1, ""
        try:
            async for message in call:
                if message.offset != got:
                    raise Unavailable(f"package {package_hash}: download from {address} skipped bytes at {got}")
                parts.append(message.chunk)
                got += len(message.chunk)
                size, digest = message.size_bytes, message.sha256
        except grpc.RpcError as exc:
            raise _download_error(exc, package_hash, address) from None
        finally:
            call.cancel()
        data = b"".join(parts)
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise Unavailable(f"package {package_hash}: the download from {address} was truncated or corrupted")
        log.info("package downloaded", extra={"fields": {"package": package_hash, "bytes": len(data), "from": address}})
        return data

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def _download_error(exc: grpc.RpcError, package_hash: str, address: str) -> LivecalcError:
    code = exc.code() if isinstance(exc, aio.AioRpcError) else grpc.StatusCode.UNKNOWN
    details = exc.details() if isinstance(exc, aio.AioRpcError) else str(exc)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"package {package_hash} is not stored at the PackageService at {address}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"downloading package {package_hash} from {address} took too long")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(f"PackageService at {address}: {details}")
    return Unavailable(f"cannot download package {package_hash} from the PackageService at {address}: {details}")
