"""The Python client (services.client) against the real data, engine and gateway servicers on
loopback in this process (tests.inprocess): packages from a directory and a file, datasets, jobs
through the sync and the async client, result parts assembled, cancellation, errors as the
project's types, retries only for reads."""

from __future__ import annotations

import time

import numpy as np
import pytest

from livecalc.gateway.v1 import job_pb2
from livecalc_client.retry import FIRST_PAUSE, JITTER
from services.client import AsyncClient, Client, JobCancelled, ResultAssembler, job_spec
from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.valuation.statistics import result_hash, statistics
from tests.client.conftest import LONG_ROWS, ROWS, InProcessSmallMesh
from tests.engine.mesh import SEED, SIGMA, in_process_hash
from tests.support import free_port

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]
SCENARIOS = 24


def _spec(package_hash: str, dataset: str = "pol", **kw: object) -> job_pb2.JobSpec:
    return job_spec(package_hash, dataset, scenarios=SCENARIOS, seed=SEED, volatility=SIGMA, **kw)  # type: ignore[arg-type]


def test_sync_client_packages_datasets_and_a_job(inprocess_small_mesh: InProcessSmallMesh) -> None:
    with Client(inprocess_small_mesh.gateway, data=inprocess_small_mesh.data) as lc:
        from_dir = lc.upload_package(inprocess_small_mesh.model_dir)  # a directory is built, then uploaded
        archive = inprocess_small_mesh.tmp / "model.zip"
        archive.write_bytes(inprocess_small_mesh.archive)
        from_file = lc.upload_package(archive)
        package_hash = from_dir.package.package_hash
        assert from_file.package.package_hash == package_hash and from_file.already_existed
        assert lc.get_package(package_hash).name == "term-life-reference"
        assert package_hash in [p.package_hash for p in lc.list_packages()]

        assert {"pol", "long"} <= {d.dataset_id for d in lc.list_datasets()}
        assert lc.get_dataset("pol").row_count == ROWS
        sample = lc.sample("pol", 5, seed=7)
        assert len(sample.rows) == 5 and sample == lc.sample("pol", 5, seed=7)
        upload = inprocess_small_mesh.tmp / "copy.csv"
        upload.write_bytes((inprocess_small_mesh.root / "pol.csv").read_bytes())
        assert lc.upload_dataset(upload).row_count == ROWS

        events = list(lc.submit(_spec(package_hash, labels={"team": "client-test"})))
        kinds = [e.WhichOneof("event") for e in events]
        assert kinds[0] == "accepted" and kinds[-1] == "result"
        assert [e.sequence for e in events] == sorted(e.sequence for e in events)
        job_id = events[0].job_id
        result = events[-1].result
        expected = in_process_hash(inprocess_small_mesh.archive, inprocess_small_mesh.table, SCENARIOS)
        (primary,) = [o for o in result.outputs if o.primary]
        assert result.result_hash == expected == result_hash(primary.values)

        assert lc.wait(job_id).result_hash == expected  # re-attached from the first event
        assert lc.run(_spec(package_hash, "copy")).result_hash == expected
        job = lc.get_job(job_id)
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED and job.spec.labels["team"] == "client-test"
        listed = lc.list_jobs(state=job_pb2.JOB_STATE_SUCCEEDED)
        assert job_id in [j.job_id for j in listed]
        assert len(lc.list_jobs(limit=1)) == 1

        preview = lc.run(_spec(package_hash, preview_rows=1000, preview_seed=3))
        assert preview.preview and preview.policy_count == 1000  # the sample; PVs scaled by rows/n

        with pytest.raises(NotFound):
            lc.get_job("no-such-job")
        with pytest.raises(InvalidArgument):
            lc.run(job_spec(package_hash, "pol", scenarios=0))
        with pytest.raises(NotFound):
            lc.get_dataset("nope")


@pytest.mark.anyio
async def test_async_client_submit_cancel_and_wait(inprocess_small_mesh: InProcessSmallMesh) -> None:
    async with AsyncClient(inprocess_small_mesh.gateway, data=inprocess_small_mesh.data) as lc:
        package_hash = (await lc.upload_package_bytes(inprocess_small_mesh.archive)).package.package_hash
        spec = job_spec(package_hash, "long", scenarios=1000, seed=SEED, volatility=SIGMA, chunk_blocks=1)
        events = lc.submit(spec)
        accepted = await anext(events)
        assert accepted.WhichOneof("event") == "accepted"
        assert accepted.accepted.job.progress.policies_total in (0, LONG_ROWS)
        await events.aclose()  # leaving the stream does not cancel the job
        job = await lc.get_job(accepted.job_id)
        assert job.state in (job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_RUNNING)
        cancelled = await lc.cancel_job(accepted.job_id, "client test")
        assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
        with pytest.raises(JobCancelled, match="client test"):
            await lc.wait(accepted.job_id)


def test_unreachable_gateway_is_unavailable_after_retries() -> None:
    address = f"127.0.0.1:{free_port()}"
    with Client(address, timeout=2, retries=2) as lc:
        started = time.monotonic()
        with pytest.raises(Unavailable, match=f"cannot reach the gateway service at {address}"):
            lc.get_job("x")
        # two pauses, 0.2 + 0.4 s less their jitter at most: the read was retried
        assert time.monotonic() - started >= (FIRST_PAUSE + 2 * FIRST_PAUSE) * (1 - JITTER)
        started = time.monotonic()
        with pytest.raises(Unavailable):
            lc.upload_package_bytes(b"not a package")  # an upload is not retried
        assert time.monotonic() - started < 0.6


def test_result_parts_are_joined_in_order() -> None:
    values = np.arange(20, dtype=np.float64).reshape(2, 10) * 1.5
    s = statistics(values[1])
    slim = job_pb2.JobResult(
        statistics=job_pb2.Statistics(scenario_count=10, mean=s.mean),
        result_hash=result_hash(values[1]),
        outputs_in_parts=True,
        outputs=[job_pb2.OutputResult(name="a"), job_pb2.OutputResult(name="b", primary=True)],
    )
    parts = [(k, first, values[k, first:stop]) for k in range(2) for first, stop in ((0, 4), (4, 10))]
    events = [
        job_pb2.JobEvent(
            job_id="j",
            sequence=i + 1,
            result_part=job_pb2.JobResultPart(first_scenario=first, scenario_count=10, output_index=k, values=v),
        )
        for i, (k, first, v) in enumerate(parts)
    ]
    events.append(job_pb2.JobEvent(job_id="j", sequence=5, result=slim))
    assembler = ResultAssembler()
    assert all(assembler.add(e) is None for e in events[:4])
    result = assembler.add(events[4])
    assert result is not None and not result.outputs_in_parts
    assert [list(o.values) for o in result.outputs] == values.tolist()
    assert result_hash(result.outputs[1].values) == slim.result_hash
    out_of_order = ResultAssembler()
    with pytest.raises(Exception, match="expected 0"):
        out_of_order.add(events[1])
    short = ResultAssembler()
    for e in events[:3]:  # output b's last part missing
        short.add(e)
    with pytest.raises(Exception, match="got 4 of 10 values of output 'b'"):
        short.add(events[4])
