"""The in-process test tier itself (tests.inprocess): the real servicers in this process run a job
to the hash of the pipeline run in this process, over loopback gRPC, and leave nothing behind —
their ports closed, their worker threads ended — whether on the test's own loop or on a thread.
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from livecalc_client import Client, job_spec
from tests.engine.mesh import SEED, SIGMA, datasets_dir, in_process_hash, policies_csv, stochastic_package
from tests.inprocess import inprocess_mesh, threaded_mesh
from tests.waits import wait_for

pytestmark = [pytest.mark.timeout(60)]
ROWS = 700
SCENARIOS = 12


def _inputs(tmp: Path) -> tuple[pa.Table, bytes]:
    """Policies at TMP/datasets/pol.csv (where the mesh's data service looks) and a package."""
    return policies_csv(datasets_dir(tmp) / "pol.csv", ROWS), stochastic_package(tmp / "model")


def _closed(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


#: Threads that outlive a mesh on purpose: grpc.aio's poller (one per process), the idle workers
#: of anyio's pool and the loop's default executor (the loop's, reused by what runs next on it).
SHARED = re.compile(r"_poll_wrapper|AnyIO worker thread|asyncio_\d+")


def _threads() -> set[threading.Thread]:
    """Running threads, but those the mesh shares with everything else in the process."""
    return {t for t in threading.enumerate() if not SHARED.search(t.name)}


@pytest.mark.anyio
async def test_a_job_on_the_tests_own_loop_has_the_in_process_pipelines_hash(tmp_path: Path) -> None:
    table, archive = _inputs(tmp_path)
    before = _threads()
    async with inprocess_mesh(tmp_path, engines=2, threads=2) as mesh:
        async with mesh.async_client() as lc:
            package_hash = (await lc.upload_package_bytes(archive)).package.package_hash
            result = await lc.run(job_spec(package_hash, "pol", scenarios=SCENARIOS, seed=SEED, volatility=SIGMA))
        async with mesh.channel(mesh.data) as channel:  # the data service answers on its own address too
            listed = await data_service_pb2_grpc.DataServiceStub(channel).ListDatasets(
                data_service_pb2.ListDatasetsRequest(), timeout=10
            )
        addresses = [mesh.data, *mesh.engines, *mesh.gateways]
        steps = [mesh.metric(e, "livecalc_engine_steps_total") for e in mesh.engines]
    assert result.result_hash == in_process_hash(archive, table, SCENARIOS)
    assert [d.dataset_id for d in listed.datasets] == ["pol"]
    assert sum(steps) == result.steps > 0
    assert all(_closed(a) for a in addresses)
    wait_for(lambda: _threads() <= before, "the mesh's threads to end")


def test_a_threaded_mesh_serves_a_blocking_test_and_stops_with_it(tmp_path: Path) -> None:
    table, archive = _inputs(tmp_path)
    before = _threads()
    with threaded_mesh(tmp_path, gateways=[[0], [0]]) as mesh:
        hashes = []
        for gateway in mesh.gateways:  # two gateways over one engine, each with its own store
            with Client(gateway, data=mesh.data) as lc:
                package_hash = lc.upload_package_bytes(archive).package.package_hash
                hashes.append(
                    lc.run(job_spec(package_hash, "pol", scenarios=SCENARIOS, seed=SEED, volatility=SIGMA)).result_hash
                )
        addresses = [mesh.data, *mesh.engines, *mesh.gateways]
    assert hashes == [in_process_hash(archive, table, SCENARIOS)] * 2
    assert (tmp_path / "gw" / "jobs.sqlite3").exists() and (tmp_path / "gw1" / "jobs.sqlite3").exists()
    assert all(_closed(a) for a in addresses)
    wait_for(lambda: _threads() <= before, "the mesh's threads to end")
