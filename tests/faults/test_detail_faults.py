"""Per-policy detail survives an engine killed mid-recomputation (issue 21 item 1 under issue 12's
faults): the detail's chunks go through the job dispatcher, so a chunk whose engine dies goes to
another engine, its half-received blocks are dropped and computed again, and the rows still fold
to the job's values bit for bit.

The mesh of tests.faults.faultmesh (every service its own process): a job of 24 blocks × 1000
scenarios, then its detail under scenarios 0 and 999 (a detail runs the window min … max, so every
block runs all 1000 scenarios again, a few seconds on three single-thread engines: scenario 999
alone would be done before the kill), with one engine SIGKILLed once it computes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from livecalc_client import Client
from services.valuation.blocks import BLOCK_SIZE
from tests.faults.faultmesh import ROWS, SCENARIOS, FaultMesh, computing, fault_mesh
from tests.gateway.jobmesh import get_job, kinds, submit
from tests.logrecords import matching
from tests.waits import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultMesh]:
    yield from fault_mesh(tmp_path_factory.mktemp("detail-faults"))


def test_detail_survives_an_engine_killed_mid_recomputation(mesh: FaultMesh) -> None:
    events = submit(mesh.gateway.address, mesh.job_spec())
    assert events[-1].WhichOneof("event") == "result", kinds(events)
    job = get_job(mesh.gateway.address, events[0].job_id)
    victim = mesh.engines[0]
    before = len(mesh.gateway.log())

    def kill_once_computing() -> None:
        wait_for(lambda: computing([victim]), "the victim to compute the detail", seconds=30, interval=0.05)
        victim.kill()

    killer = threading.Thread(target=kill_once_computing, daemon=True)
    killer.start()
    with Client(mesh.gateway.address, timeout=60) as lc:
        frame = lc.job_detail(job.job_id, scenarios=[0, SCENARIOS - 1])
    killer.join(timeout=30)
    assert victim.proc.poll() is not None, "the victim was never killed"
    assert matching(mesh.gateway.log()[before:], "chunk failed on an engine; requeued", engine=victim.address)
    values = {(o.name, s): o.values[s] for o in job.result.outputs for s in (0, SCENARIOS - 1)}
    assert len(frame) == ROWS
    for (name, s), expected in values.items():
        column = frame[f"{name}_s{s}"].to_numpy()
        total = 0.0
        for start in range(0, ROWS, BLOCK_SIZE):
            block = 0.0
            for v in column[start : start + BLOCK_SIZE]:
                block += float(v)
            total += block
        assert np.float64(total).tobytes() == np.float64(expected).tobytes(), (name, s)
    mesh.engines[0] = mesh.services.restart(victim)
