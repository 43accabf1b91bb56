"""What a job reads before it runs: dataset metadata and the dataset's verdict against the
package's declared rules from the data service, the package's declaration, outputs and default
scenarios, and the validated scenario parameters.

The data service is reached over gRPC (services never import each other); its statuses
come back as `Upstream` errors with the same code, so NOT_FOUND stays NOT_FOUND.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import anyio.to_thread
import grpc
from grpc import aio

from livecalc.data.v1 import data_pb2, data_service_pb2
from livecalc.engine.v1 import engine_pb2
from services.common.auth.service import ServiceCredentials
from services.common.client import ChannelSecurity
from services.common.errors import FieldViolation, InvalidArgument, LivecalcError
from services.gateway.data_channel import DataServiceChannel
from services.gateway.package_store import PackageStore
from services.valuation.errors import ModelInputError
from services.valuation.interface.declaration import Outputs
from services.valuation.interface.parser import outputs_of
from services.valuation.interface.records import package_rules
from services.valuation.interface.tables import bounds_json
from services.valuation.packages.archive import read_archive
from services.valuation.packages.canonical import canonical_json
from services.valuation.packages.manifest import CONFIG
from services.valuation.scenarios import ScenarioParams

DATA_TIMEOUT: Final = 10.0
#: ValidateDataset reads the whole dataset (about a second per million rows here).
VALIDATE_TIMEOUT: Final = 300.0
#: Violations a validation brings back in detail (the counts by rule cover all of them): enough
#: to find the first of each rule in most datasets.
VALIDATE_DETAIL: Final = 1000


class Upstream(LivecalcError):
    """Another service answered with an error; `code` is its status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class DatasetInfo:
    dataset_id: str
    version: str
    rows: int


@dataclass(frozen=True)
class RowViolation:
    """One broken rule: the 0-based data row, the column ('' for rules across columns), the rule."""

    row: int
    column: str
    rule: str
    message: str


@dataclass(frozen=True)
class Declaration:
    """What a dataset is judged against (ValidateDatasetRequest): a package's declared interface,
    as canonical JSON, and the table bounds its rules read, from the package's tables. An empty
    ``interface_json`` (a package stored before declarations) names the model: the data service
    judges by its shipped term-life declaration."""

    model: str
    interface_json: str = ""
    table_bounds: tuple[tuple[str, float], ...] = ()
    """``("mortality.age.first", 18.0)``, sorted."""

    @property
    def digest(self) -> str:
        """Identity of the rules: the same digest, the same verdict on one version of a dataset."""
        if not self.interface_json:
            return f"model:{self.model}"
        bounds = json.dumps(self.table_bounds, separators=(",", ":"))
        return hashlib.sha256(f"{self.interface_json}\n{bounds}".encode()).hexdigest()


def declaration_of(config: Mapping[str, Any], files: Mapping[str, bytes]) -> Declaration:
    """The declaration a package's config and files give its datasets; `InvalidArgument` when
    the declaration, or a table whose bounds its rules read, is broken."""
    model = str(config.get("model") or "")
    if "interface" not in config:
        return Declaration(model)
    try:
        _, bounds = package_rules(config, files.get)
    except ValueError as exc:
        raise InvalidArgument(f"the package's declaration cannot judge datasets: {exc}") from None
    interface_json = canonical_json(config["interface"]).decode("utf-8")
    return Declaration(model, interface_json, tuple(sorted(bounds_json(bounds).items())))


@dataclass(frozen=True)
class Validation:
    """The data service's verdict on one version of a dataset against a model's rules."""

    dataset_id: str
    version: str
    violation_count: int
    #: The first violations in row order (at most VALIDATE_DETAIL).
    violations: tuple[RowViolation, ...] = ()
    #: Violations by rule over the whole dataset.
    rule_counts: tuple[tuple[str, int], ...] = ()
    missing_columns: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return self.violation_count == 0 and not self.missing_columns


class Datasets(Protocol):
    """Dataset metadata and validation (the data service, or a fake in tests)."""

    async def get(self, dataset_id: str, tenant: str = "") -> DatasetInfo: ...

    async def validate(self, dataset_id: str, declaration: Declaration, tenant: str = "") -> Validation: ...


class DataServiceDatasets(DataServiceChannel):
    """GetDataset and ValidateDataset over one channel to the data service."""

    def __init__(
        self,
        address: str,
        timeout: float = DATA_TIMEOUT,
        *,
        credentials: ServiceCredentials | None = None,
        security: ChannelSecurity | None = None,
    ) -> None:
        super().__init__(address, credentials=credentials, security=security)
        self.timeout = timeout

    def _upstream(self, exc: aio.AioRpcError) -> Upstream:
        details = exc.details() or exc.code().name
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            details = f"cannot reach the data service at {self.address}: {details}"
        return Upstream(exc.code(), details)

    async def dataset(self, dataset_id: str, tenant: str = "") -> data_pb2.Dataset:
        """GetDataset as ``tenant``; an `aio.AioRpcError` passes through, for the caller to word."""
        reply = await self.stub().GetDataset(
            data_service_pb2.GetDatasetRequest(dataset_id=dataset_id),
            timeout=self.timeout,
            metadata=self.credentials.metadata(tenant),
        )
        return reply.dataset

    async def get(self, dataset_id: str, tenant: str = "") -> DatasetInfo:
        """The dataset as ``tenant`` sees it (NOT_FOUND when the tenant has no such dataset)."""
        try:
            d = await self.dataset(dataset_id, tenant)
        except aio.AioRpcError as exc:
            raise self._upstream(exc) from None
        return DatasetInfo(d.dataset_id, d.version, int(d.row_count))

    async def validate(self, dataset_id: str, declaration: Declaration, tenant: str = "") -> Validation:
        """The current version of ``tenant``'s dataset judged against the declared rules."""
        try:
            reply = await self.stub().ValidateDataset(
                data_service_pb2.ValidateDatasetRequest(
                    dataset_id=dataset_id,
                    model=declaration.model,
                    max_violations=VALIDATE_DETAIL,
                    interface_json=declaration.interface_json,
                    table_bounds=dict(declaration.table_bounds),
                ),
                timeout=VALIDATE_TIMEOUT,
                metadata=self.credentials.metadata(tenant),
            )
        except aio.AioRpcError as exc:
            raise self._upstream(exc) from None
        return Validation(
            dataset_id=reply.dataset_id,
            version=reply.version,
            violation_count=int(reply.violation_count),
            violations=tuple(RowViolation(int(v.row), v.column, v.rule, v.message) for v in reply.violations),
            rule_counts=tuple((c.rule, int(c.count)) for c in reply.rule_counts),
            missing_columns=tuple(reply.missing_columns),
        )


class PackageConfigs:
    """The configs of stored packages and the declarations their datasets are judged by (read
    once per package, then cached)."""

    def __init__(self, store: PackageStore) -> None:
        self.store = store
        self._cache: dict[str, dict[str, Any]] = {}
        self._declarations: dict[str, Declaration | InvalidArgument] = {}

    async def get(self, package_hash: str, tenant: str = "") -> dict[str, Any]:
        """The config of ``tenant``'s package (one package hash is one config, whoever stored
        it, so the cache is by hash; callers check the tenant has it first)."""
        if package_hash not in self._cache:
            data = b"".join([piece async for *_, piece in self.store.download(package_hash, tenant=tenant)])
            files = read_archive(data, self.store.limits)
            config = dict(json.loads(files[CONFIG]))
            try:
                found: Declaration | InvalidArgument = await anyio.to_thread.run_sync(declaration_of, config, files)
            except InvalidArgument as exc:  # a broken declaration refuses jobs, not the package's other uses
                found = exc
            self._declarations[package_hash] = found
            self._cache[package_hash] = config
        return self._cache[package_hash]

    async def declaration(self, package_hash: str, tenant: str = "") -> Declaration:
        """What the package's datasets are judged against; `InvalidArgument` when its declaration is broken."""
        await self.get(package_hash, tenant)
        found = self._declarations[package_hash]
        if isinstance(found, InvalidArgument):
            raise found
        return found

    async def scenarios(self, package_hash: str, tenant: str = "") -> dict[str, Any]:
        """The package's configured scenarios."""
        return dict((await self.get(package_hash, tenant)).get("scenarios") or {})

    async def outputs(self, package_hash: str, tenant: str = "") -> Outputs:
        """The outputs the package's model declares, in its order, and which is primary (term
        life's five, net_cf primary, for a package without a declaration)."""
        return outputs_of(await self.get(package_hash, tenant))


def scenario_params(spec: engine_pb2.ScenarioSpec | None, configured: dict[str, Any]) -> ScenarioParams:
    """The job's scenarios: each parameter the spec sets (its count, ≥ 1, when there is a spec),
    else the package's configured one, else the generator's default — so `--scenarios 5` alone
    keeps the package's seed and volatility, never seed 0 and the defaults."""
    given = spec or engine_pb2.ScenarioSpec()
    try:
        return ScenarioParams(
            count=int(given.count) if spec is not None else int(configured.get("count", 0)),
            seed=int(given.seed) if given.HasField("seed") else int(configured.get("seed", 0)),
            a=given.mean_reversion if given.HasField("mean_reversion") else float(configured.get("a", 0.1)),
            sigma=given.volatility if given.HasField("volatility") else float(configured.get("sigma", 0.01)),
            include_base=(
                given.include_base if given.HasField("include_base") else bool(configured.get("include_base", True))
            ),
        )
    except ModelInputError as exc:
        raise InvalidArgument(
            "invalid scenarios",
            tuple(FieldViolation(f"spec.scenarios.{v.column}", v.message) for v in exc.violations),
        ) from None


def scenario_spec(params: ScenarioParams) -> engine_pb2.ScenarioSpec:
    """Every parameter explicit, so engines never fall back to their own defaults."""
    return engine_pb2.ScenarioSpec(
        count=params.count,
        seed=params.seed,
        mean_reversion=params.a,
        volatility=params.sigma,
        include_base=params.include_base,
    )


def scenarios_key(params: ScenarioParams) -> str:
    """Identity of a scenario set, for comparing a preview with a full run."""
    return f"{params.count}:{params.seed}:{params.a!r}:{params.sigma!r}:{int(params.include_base)}"
