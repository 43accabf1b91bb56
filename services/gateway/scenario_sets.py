"""Scenario sets at submit: a job whose scenarios come from a dataset instead of the generator.

A job names a *scenario set* in ``JobSpec.scenarios.dataset_id`` (and optionally the version it
expects in ``dataset_version``). The set is a dataset with columns ``scenario`` (0..S−1),
``month`` (0..M−1) and one float column per scenario input the package's model declares, named
as the input; its rows go by scenario then month, every scenario with months 0..M−1, so it has
S·M rows (docs/model-interface.md "Scenario inputs").

At submit the gateway reads, as the job's tenant, the set's metadata (GetDataset: version, rows,
columns) and its last row's ``scenario`` (ReadRows of one row) to learn S; it refuses with
INVALID_ARGUMENT a set that lacks a column, whose columns have the wrong type, whose rows are not
S·M for a whole M, or that has fewer scenarios than the job asks for (FAILED_PRECONDITION when
the set is not at the version asked for). The job's count N defaults to S (count 0). The job's
recorded spec carries the version and M, which engines read: rows [0, N·M), checked row by row
(services/engine/scenario_sets.py). Seeds and the generator's parameters play no part in a
scenario-set job; the result names the set and version it used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import grpc
import pyarrow as pa
from grpc import aio

from livecalc.data.v1 import data_pb2, data_service_pb2
from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2
from services.common.errors import FailedPrecondition, InvalidArgument
from services.gateway.inputs import DataServiceDatasets, PackageConfigs, Upstream, scenarios_key
from services.valuation.interface.parser import interface_of
from services.valuation.scenarios import ScenarioParams

if TYPE_CHECKING:
    from livecalc.data.v1.data_service_pb2_grpc import DataServiceAsyncStub

SCENARIO: Final = "scenario"
MONTH: Final = "month"
#: Longest scenario a set may have (a context's n_months is a u32; far beyond any horizon).
MAX_MONTHS: Final = 1 << 20
#: How an engine's refusal of a broken set begins (services/engine/scenario_sets.py).
SET_MESSAGE_PREFIX: Final = "scenario set "
_INTEGER = (data_pb2.COLUMN_TYPE_INT64,)
_NUMBER = (data_pb2.COLUMN_TYPE_INT64, data_pb2.COLUMN_TYPE_FLOAT64)


@dataclass(frozen=True)
class SetMetadata:
    """A dataset as GetDataset describes it: version, rows and columns (name → ColumnType)."""

    dataset_id: str
    version: str
    rows: int
    columns: tuple[tuple[str, int], ...]


class ScenarioSetSource(Protocol):
    """What the gateway reads of a scenario set (the data service, or a fake in tests)."""

    async def describe(self, dataset_id: str, tenant: str = "") -> SetMetadata: ...

    async def scenario_at(self, dataset_id: str, version: str, row: int, tenant: str = "") -> int | None:
        """The ``scenario`` cell of one row (None when it is empty)."""
        ...


class DataServiceScenarioSets:
    """GetDataset and one-row ReadRows on the channel of the gateway's `DataServiceDatasets`
    (the same data service, credentials and channel security; the datasets client owns and
    closes the channel)."""

    def __init__(self, datasets: DataServiceDatasets) -> None:
        self.address = datasets.address
        self.timeout = datasets.timeout
        self.credentials = datasets.credentials
        self._datasets = datasets

    def _stub(self) -> DataServiceAsyncStub:
        return self._datasets.stub()

    def _upstream(self, exc: aio.AioRpcError) -> Upstream:
        details = exc.details() or exc.code().name
        return Upstream(exc.code(), f"scenario set: data service at {self.address}: {details}")

    async def describe(self, dataset_id: str, tenant: str = "") -> SetMetadata:
        try:
            d = await self._datasets.dataset(dataset_id, tenant)
        except aio.AioRpcError as exc:
            raise self._upstream(exc) from None
        return SetMetadata(d.dataset_id, d.version, int(d.row_count), tuple((c.name, int(c.type)) for c in d.columns))

    async def scenario_at(self, dataset_id: str, version: str, row: int, tenant: str = "") -> int | None:
        request = data_service_pb2.ReadRowsRequest(
            dataset_id=dataset_id, start_row=row, end_row=row + 1, columns=[SCENARIO], expected_version=version
        )
        cells: list[Any] = []
        try:
            async for message in self._stub().ReadRows(
                request, timeout=self.timeout, metadata=self.credentials.metadata(tenant)
            ):
                with pa.ipc.open_stream(message.arrow_ipc) as stream:
                    cells += stream.read_all().column(SCENARIO).to_pylist()
        except aio.AioRpcError as exc:
            raise self._upstream(exc) from None
        if len(cells) != 1:
            raise Upstream(
                grpc.StatusCode.UNAVAILABLE,
                f"scenario set {dataset_id}: the data service sent {len(cells)} rows for row {row}",
            )
        value = cells[0]
        return None if value is None else int(value)


@dataclass(frozen=True)
class ScenarioSet:
    """A job's scenario set as resolved at submit: S scenarios of M months, N of them used."""

    dataset_id: str
    version: str
    scenarios: int
    months: int
    count: int

    def requested(self, spec: engine_pb2.ScenarioSpec) -> engine_pb2.ScenarioSpec:
        """The job's scenario spec with its count resolved (for `scenario_params`)."""
        out = engine_pb2.ScenarioSpec()
        out.CopyFrom(spec)
        out.count = self.count
        return out

    def record(self, spec: engine_pb2.ScenarioSpec) -> None:
        """Write the set into the job's recorded (and engines') scenario spec."""
        spec.count = self.count
        spec.dataset_id = self.dataset_id
        spec.dataset_version = self.version
        spec.months = self.months


def _label(meta: SetMetadata) -> str:
    return f"scenario set {meta.dataset_id} (version {meta.version})"


async def resolve(
    source: ScenarioSetSource, spec: engine_pb2.ScenarioSpec, inputs: tuple[str, ...], tenant: str = ""
) -> ScenarioSet:
    """Check the set ``spec`` names against the model's declared scenario ``inputs`` (see the
    module docstring); its shape, and the job's count N (0: all S)."""
    if not inputs:
        raise InvalidArgument(
            f"scenario set {spec.dataset_id}: the package's model declares no scenario inputs to read from a set"
        )
    meta = await source.describe(spec.dataset_id, tenant)  # NOT_FOUND when the tenant has no such dataset
    label = _label(meta)
    if spec.dataset_version and spec.dataset_version != meta.version:
        raise FailedPrecondition(
            f"scenario set {meta.dataset_id} is at version {meta.version}; the job asks for {spec.dataset_version}"
        )
    types = dict(meta.columns)
    missing = [c for c in (SCENARIO, MONTH, *inputs) if c not in types]
    if missing:
        raise InvalidArgument(
            f"{label} has no column {', '.join(missing)}: a scenario set has columns scenario, month and one "
            f"per scenario input the model declares ({', '.join(inputs)})"
        )
    wrong = [
        f"{name} is {data_pb2.ColumnType.Name(types[name]).removeprefix('COLUMN_TYPE_').lower()}"  # type: ignore[arg-type]
        for name, allowed in [(SCENARIO, _INTEGER), (MONTH, _INTEGER), *[(i, _NUMBER) for i in inputs]]
        if types[name] not in allowed
    ]
    if wrong:
        raise InvalidArgument(
            f"{label}: {'; '.join(wrong)}: scenario and month must be whole numbers, scenario inputs numbers"
        )
    if meta.rows < 1:
        raise InvalidArgument(f"{label} has no rows")
    last = await source.scenario_at(meta.dataset_id, meta.version, meta.rows - 1, tenant)
    if last is None or last < 0:
        raise InvalidArgument(
            f"{label}: its last row's scenario is {'empty' if last is None else last}; scenarios are numbered 0..S−1"
        )
    scenarios = last + 1
    months, extra = divmod(meta.rows, scenarios)
    if extra or months < 1:
        raise InvalidArgument(
            f"{label} has {meta.rows} rows and {scenarios} scenarios (its last row's scenario is {last}): "
            f"not {scenarios}·M rows for a whole number of months M; every scenario needs the same months 0..M−1"
        )
    if months > MAX_MONTHS:
        raise InvalidArgument(f"{label} has {months} months per scenario; at most {MAX_MONTHS} are allowed")
    count = int(spec.count) or scenarios
    if count > scenarios:
        raise InvalidArgument(f"{label} has {scenarios} scenarios; the job asks for {count}")
    return ScenarioSet(meta.dataset_id, meta.version, scenarios, months, count)


async def job_scenario_set(
    source: ScenarioSetSource | None, configs: PackageConfigs, spec: job_pb2.JobSpec, tenant: str = ""
) -> ScenarioSet | None:
    """The job's scenario set resolved (None: the generator makes its scenarios)."""
    if not spec.HasField("scenarios") or not spec.scenarios.dataset_id:
        return None
    if source is None:
        raise FailedPrecondition("this gateway has no data service to read scenario sets from")
    config = await configs.get(spec.package_hash, tenant)
    if "interface" not in config:
        raise InvalidArgument(f"package {spec.package_hash} declares no model interface: it cannot take a scenario set")
    try:
        interface = interface_of(config)
    except ValueError as exc:
        raise InvalidArgument(f"package {spec.package_hash}: {exc}") from None
    return await resolve(source, spec.scenarios, tuple(s.name for s in interface.scenario_inputs), tenant)


def result_scenarios_key(spec: engine_pb2.ScenarioSpec, params: ScenarioParams) -> str:
    """Identity of a job's scenarios (comparing a preview with a full run): the generator's
    parameters, or the set, its version and the count used."""
    if spec.dataset_id:
        return f"set:{spec.dataset_id}@{spec.dataset_version}:{params.count}"
    return scenarios_key(params)


def mark_result(result: job_pb2.JobResult, spec: engine_pb2.ScenarioSpec) -> None:
    """Name the scenario set a result used (nothing for the generator's)."""
    if spec.dataset_id:
        result.scenario_dataset_id = spec.dataset_id
        result.scenario_dataset_version = spec.dataset_version
