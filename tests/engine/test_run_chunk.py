"""EngineService.RunChunk and GetCapabilities on real data, gateway and engine processes.

The partials an engine streams fold to the in-process pipeline's result bit for bit (dynamic
lapse on); bad rows, changed datasets, busy engines and cancelled calls get their statuses;
a cancelled chunk's CPU work stops within a second, measured from the engine's side.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pytest

from livecalc.engine.v1 import engine_service_pb2, engine_service_pb2_grpc
from services.valuation.blocks import BLOCK_SIZE, BlockFolder, block_count, fold
from services.valuation.statistics import result_hash
from tests.engine.mesh import (
    SCENARIOS,
    chunk_request,
    dataset_version,
    datasets_dir,
    events,
    in_process_run,
    partial_values,
    policies_csv,
    run_chunk,
    stochastic_package,
    upload_package,
)
from tests.meshes import Services
from tests.support import VENV_BIN, ServiceProcess, metric, wait_started
from tests.waits import wait_for

ROWS = 5 * BLOCK_SIZE - 300  # 5 blocks, the last one partial
BAD_ROW = 2 * BLOCK_SIZE + 77  # in block 2
LONG_ROWS = 24 * BLOCK_SIZE


@dataclass
class Mesh:
    data: ServiceProcess
    gateway: ServiceProcess
    engine: ServiceProcess
    package_hash: str
    archive: bytes
    table: pa.Table
    root: Path


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("mesh")
    root = datasets_dir(tmp)
    table = policies_csv(root / "pol.csv", ROWS)
    policies_csv(root / "bad.csv", ROWS, bad_row=BAD_ROW)
    policies_csv(root / "long.csv", LONG_ROWS, seed=5)
    archive = stochastic_package(tmp / "model")
    with Services(tmp) as services:
        # started together: none of them reaches another before a test asks it to
        data = services.data(root, wait=False)
        gateway = services.gateway(wait=False)  # a package source only: no engines, no data service
        engine = services.engine(data, "engine", threads=2, extra=["--piece-blocks", "2"], wait=False)
        for service in (data, gateway, engine):
            wait_started(service)
        package_hash = upload_package(gateway.address, archive)
        yield Mesh(data, gateway, engine, package_hash, archive, table, root)


def test_partials_fold_to_the_in_process_result_bit_for_bit(mesh: Mesh) -> None:
    version = dataset_version(mesh.data.address, "pol")
    expected = in_process_run(mesh.archive, mesh.table, SCENARIOS).partials  # f64 [blocks][5][N]
    blocks = block_count(ROWS)
    folder = BlockFolder(blocks)
    # two chunks, as a gateway might split the job: [0, 3) and [3, 5)
    for first, count in ((3, 2), (0, 3)):
        request = chunk_request(mesh.package_hash, mesh.gateway.address, "pol", version,
                                first_block=first, block_count=count)  # fmt: skip
        responses = run_chunk(mesh.engine.address, request)
        kinds = [r.WhichOneof("event") for r in responses]
        assert kinds[0] == "progress" and kinds[-1] == "summary"
        partials = list(events(responses, "partial"))
        assert [p.block_index for p in partials] == list(range(first, first + count))  # type: ignore[attr-defined]
        for p in partials:
            b = p.block_index  # type: ignore[attr-defined]
            assert p.first_row == b * BLOCK_SIZE  # type: ignore[attr-defined]
            assert p.row_count == min(BLOCK_SIZE, ROWS - b * BLOCK_SIZE)  # type: ignore[attr-defined]
            assert p.output_count == 5  # type: ignore[attr-defined]  # the package's declared outputs
            values = partial_values(p)  # type: ignore[arg-type]
            assert values.tobytes() == expected[b].tobytes()
            folder.add(b, values[4])
        progress = list(events(responses, "progress"))
        assert progress[-1].blocks_done == count and progress[-1].blocks_total == count  # type: ignore[attr-defined]
        summary = responses[-1].summary
        assert summary.blocks == count and summary.threads == 2 and summary.steps > 0
        assert summary.steps == progress[-1].steps_done  # type: ignore[attr-defined]
    assert result_hash(folder.total()) == result_hash(fold(expected[:, 4, :]))


def test_a_blocks_partial_packs_every_output_and_splits_by_scenario_to_fit_a_message() -> None:
    from services.engine.chunk_runner import block_partials

    values = np.arange(3 * 10, dtype=np.float64).reshape(3, 10)  # 3 outputs, 10 scenarios
    (whole,) = block_partials(7, 7 * BLOCK_SIZE, 100, values)
    assert (whole.block_index, whole.first_row, whole.row_count, whole.first_scenario) == (7, 7 * BLOCK_SIZE, 100, 0)
    assert whole.output_count == 3 and partial_values(whole).tobytes() == values.tobytes()
    pieces = block_partials(7, 7 * BLOCK_SIZE, 100, values, budget=8 * 3 * 4)  # 4 scenarios a message
    assert [p.first_scenario for p in pieces] == [0, 4, 8]
    joined = np.concatenate([partial_values(p) for p in pieces], axis=1)
    assert joined.tobytes() == values.tobytes()


def test_sample_runs_as_one_partial(mesh: Mesh) -> None:
    version = dataset_version(mesh.data.address, "pol")
    request = chunk_request(mesh.package_hash, mesh.gateway.address, "pol", version, sample=(1500, 3))
    responses = run_chunk(mesh.engine.address, request)
    partials = list(events(responses, "partial"))
    assert len(partials) == 1 and partials[0].row_count == 1500  # type: ignore[attr-defined]
    again = list(events(run_chunk(mesh.engine.address, request), "partial"))
    assert partial_values(again[0]).tobytes() == partial_values(partials[0]).tobytes()  # type: ignore[arg-type]


def test_a_sample_in_groups_answers_each_groups_exact_sum(mesh: Mesh) -> None:
    """SampleSelection.group_rows: group g is sample positions [g·q, (g+1)·q); its partial is the
    in-process run of those rows (a run of its own for q < B; the sample's blocks for q = B,
    whose fold is the one-partial answer's bits)."""
    from services.data.sampling import sample_indices

    version = dataset_version(mesh.data.address, "pol")
    n, seed = 1500, 3
    rows = mesh.table.take(pa.array(sample_indices(ROWS, n, seed)))
    request = chunk_request(mesh.package_hash, mesh.gateway.address, "pol", version, sample=(n, seed))
    (whole,) = events(run_chunk(mesh.engine.address, request), "partial")
    request.sample.group_rows = 200
    responses = run_chunk(mesh.engine.address, request)
    partials = list(events(responses, "partial"))
    assert [(p.block_index, p.first_row, p.row_count) for p in partials] == [  # type: ignore[attr-defined]
        (g, 200 * g, min(200, n - 200 * g)) for g in range(8)
    ]
    for g, p in enumerate(partials):
        expected = in_process_run(mesh.archive, rows.slice(200 * g, 200), SCENARIOS).partials[0]
        assert partial_values(p).tobytes() == expected.tobytes()  # type: ignore[arg-type]
    progress = list(events(responses, "progress"))
    assert progress[-1].blocks_done == progress[-1].blocks_total == 8  # type: ignore[attr-defined]
    request.sample.group_rows = BLOCK_SIZE
    blocks = list(events(run_chunk(mesh.engine.address, request), "partial"))
    assert [(p.block_index, p.row_count) for p in blocks] == [(0, BLOCK_SIZE), (1, n - BLOCK_SIZE)]  # type: ignore[attr-defined]
    folded = fold(np.stack([partial_values(p) for p in blocks]))  # type: ignore[arg-type]
    assert folded.tobytes() == partial_values(whole).tobytes()  # type: ignore[arg-type]
    request.sample.group_rows = BLOCK_SIZE + 1
    with pytest.raises(grpc.RpcError) as info:
        run_chunk(mesh.engine.address, request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_row_is_invalid_argument_naming_dataset_row_and_column(mesh: Mesh) -> None:
    version = dataset_version(mesh.data.address, "bad")
    request = chunk_request(mesh.package_hash, mesh.gateway.address, "bad", version, first_block=0, block_count=5)
    with pytest.raises(grpc.RpcError) as info:
        run_chunk(mesh.engine.address, request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    assert f"row {BAD_ROW}" in details and "age_at_entry" in details


def test_wrong_dataset_version_is_failed_precondition(mesh: Mesh) -> None:
    request = chunk_request(mesh.package_hash, mesh.gateway.address, "pol", "not-the-version", block_count=1)
    with pytest.raises(grpc.RpcError) as info:
        run_chunk(mesh.engine.address, request)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_unknown_package_is_not_found(mesh: Mesh) -> None:
    version = dataset_version(mesh.data.address, "pol")
    request = chunk_request("ab" * 32, mesh.gateway.address, "pol", version)
    with pytest.raises(grpc.RpcError) as info:
        run_chunk(mesh.engine.address, request)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_busy_engine_is_resource_exhausted_and_cancel_stops_cpu_within_a_second(mesh: Mesh) -> None:
    version = dataset_version(mesh.data.address, "long")
    # 8000 scenarios: one piece (2 blocks) is about a second of WASM work on 2 cores, so ending
    # well inside a second of the cancel needs the interrupt, not the end of the piece
    request = chunk_request(mesh.package_hash, mesh.gateway.address, "long", version,
                            block_count=block_count(LONG_ROWS), scenarios=8000)  # fmt: skip
    with grpc.insecure_channel(mesh.engine.address) as channel:
        stub = engine_service_pb2_grpc.EngineServiceStub(channel)
        call = stub.RunChunk(request, timeout=120)
        try:
            first = next(call)
            assert first.WhichOneof("event") == "progress"
            wait_for(
                lambda: metric(mesh.engine, "livecalc_engine_compute_in_flight") >= 1,
                "the chunk to start computing",
                seconds=30,
                interval=0.05,
            )
            time.sleep(0.5)  # well inside the WASM work
            with pytest.raises(grpc.RpcError) as info:
                list(stub.RunChunk(request, timeout=30))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "slots" in (info.value.details() or "")
            caps = stub.GetCapabilities(engine_service_pb2.GetCapabilitiesRequest(), timeout=10)
            assert caps.slots == 1 and caps.busy_slots == 1
            cancelled_at = time.time()
        finally:
            call.cancel()
        # engine side: the run ends (its thread leaves WASM) within a second of the cancel
        wait_for(
            lambda: metric(mesh.engine, "livecalc_engine_compute_in_flight") == 0,
            "WASM to stop after the cancel",
            seconds=5,
        )
        ended = metric(mesh.engine, "livecalc_engine_last_compute_end_timestamp_seconds")
        assert ended - cancelled_at < 1.0, f"compute ended {ended - cancelled_at:.3f} s after the cancel"
        # and the process burns no CPU afterwards
        time.sleep(0.3)
        before = cpu_seconds(mesh.engine.proc.pid)
        time.sleep(1.0)
        burnt = cpu_seconds(mesh.engine.proc.pid) - before
        print(f"compute ended {ended - cancelled_at:.3f} s after the cancel; CPU in the next second {burnt:.3f} s")
        assert burnt < 0.2
        # the slot is free again
        caps = stub.GetCapabilities(engine_service_pb2.GetCapabilitiesRequest(), timeout=10)
        assert caps.busy_slots == 0
        assert metric(mesh.engine, "livecalc_engine_busy_slots") == 0


def test_get_capabilities_through_grpcurl(mesh: Mesh) -> None:
    run_chunk(
        mesh.engine.address,
        chunk_request(mesh.package_hash, mesh.gateway.address, "pol", dataset_version(mesh.data.address, "pol")),
    )
    done = subprocess.run(
        [str(VENV_BIN / "grpcurl"), "-plaintext", mesh.engine.address,
         "livecalc.engine.v1.EngineService/GetCapabilities"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    caps = json.loads(done.stdout)
    assert caps["threads"] == 2 and caps["slots"] == 1 and caps["simd"] is True and caps["sharedMemory"] is True
    assert caps["cachedPackages"] == [mesh.package_hash]
    assert caps["measuredStepsPerSecond"] > 0 and int(caps["packageCacheBytes"]) > 0
    assert caps["abiVersion"] == 2 and caps["pythonNodes"] == ["esg", "normals", "savings", "term_life"]
