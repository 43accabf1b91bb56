"""JobService end to end: data service, engines and gateways as real processes on free ports.

Issue 10's "Must show": the same result hash as the in-process pipeline for 1, 2 and 3
engines and three chunk sizes (dynamic lapse on); statistics equal numpy's on the returned
vector; events in sequence, running statistics converging, WatchJob replays from 0 and from
the middle (also after a gateway restart); previews; bad specs; grpcurl JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pytest

from livecalc.gateway.v1 import job_pb2
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.statistics import CTE_LEVELS, PERCENTILES, cte_count, result_hash
from tests.engine.mesh import datasets_dir, in_process_hash, policies_csv, stochastic_package, upload_package
from tests.gateway.jobmesh import get_job, grpcurl, kinds, primary, spec, submit, values, watch
from tests.meshes import Services
from tests.support import ServiceProcess, wait_started

pytestmark = pytest.mark.timeout(300)

ROWS = 5 * BLOCK_SIZE - 300  # 5 blocks, the last one partial
BAD_ROW = 2 * BLOCK_SIZE + 77
SCENARIOS = 40
S = job_pb2.JobState


@dataclass
class Mesh:
    tmp: Path
    root: Path
    data: ServiceProcess
    engines: list[ServiceProcess]
    gateways: dict[int, ServiceProcess]  # by engine count
    package_hash: str
    archive: bytes
    table: pa.Table


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("jobs")
    root = datasets_dir(tmp)
    table = policies_csv(root / "pol.csv", ROWS)
    policies_csv(root / "bad.csv", ROWS, bad_row=BAD_ROW)
    archive = stochastic_package(tmp / "model")
    with Services(tmp) as services:
        # started together kind by kind, the gateways once the engines serve (as in Services.mesh)
        data = services.data(root, wait=False)
        engines = [services.engine(data, f"e{i}", wait=False) for i in range(3)]
        for service in (data, *engines):
            wait_started(service)
        gateways = {n: services.gateway(data, engines[:n], store=f"gw{n}", wait=False) for n in (1, 2, 3)}
        for gateway in gateways.values():
            wait_started(gateway)
        package_hash = ""
        for gateway in gateways.values():
            package_hash = upload_package(gateway.address, archive)
        yield Mesh(tmp, root, data, engines, gateways, package_hash, archive, table)


def final(events: list[job_pb2.JobEvent]) -> job_pb2.JobEvent:
    assert events, "no events"
    return events[-1]


def test_same_hash_as_in_process_for_1_2_3_engines_and_three_chunk_sizes(mesh: Mesh) -> None:
    expected = in_process_hash(mesh.archive, mesh.table, SCENARIOS)
    months = 12 * np.asarray(mesh.table.column("policy_term")) - np.asarray(mesh.table.column("duration_mth"))
    expected_steps = int(months.sum()) * SCENARIOS  # every chunk's steps, the last one's included
    for n, gateway in mesh.gateways.items():
        for chunk_blocks in (1, 2, 3):
            events = submit(gateway.address, spec(mesh.package_hash, "pol", SCENARIOS, chunk_blocks=chunk_blocks))
            last = final(events)
            assert last.WhichOneof("event") == "result", (n, chunk_blocks, last)
            assert last.result.result_hash == expected, (n, chunk_blocks)
            assert last.result.steps == expected_steps, (n, chunk_blocks)
            accepted = events[0].accepted
            assert accepted.blocks_total == 5 and accepted.chunks_total == math.ceil(5 / chunk_blocks)
            v = np.array(primary(last.result).values)
            assert result_hash(v) == expected and v.size == SCENARIOS
    # the planner's own choice: at least two chunks per engine slot
    events = submit(mesh.gateways[2].address, spec(mesh.package_hash, "pol", SCENARIOS))
    assert events[0].accepted.chunks_total >= 4
    assert final(events).result.result_hash == expected


def test_final_statistics_equal_numpys_on_the_returned_vector(mesh: Mesh) -> None:
    events = submit(mesh.gateways[3].address, spec(mesh.package_hash, "pol", SCENARIOS))
    result = final(events).result
    v = np.array(primary(result).values)
    s = result.statistics
    assert s.scenario_count == SCENARIOS
    assert s.mean == np.mean(v) and s.std == np.std(v, ddof=1) and s.min == v.min() and s.max == v.max()
    assert s.standard_error == np.std(v, ddof=1) / math.sqrt(v.size)
    assert [p.level for p in s.percentiles] == list(PERCENTILES)
    for p in s.percentiles:
        assert p.value == np.percentile(v, p.level)
    assert [c.level for c in s.ctes] == list(CTE_LEVELS)
    ordered = np.sort(v)
    for c in s.ctes:
        k = math.ceil(round((1 - c.level / 100) * v.size, 9))
        assert k == cte_count(v.size, c.level)
        assert c.value == np.mean(ordered[:k])
    assert result.policy_count == ROWS and result.steps > 0 and result.elapsed_seconds > 0
    assert result.package_hash == mesh.package_hash and result.dataset_version
    # the package's declared outputs, each with its statistics and values; net_cf the primary
    assert [(o.name, o.primary) for o in result.outputs] == [
        ("premiums", False),
        ("claims", False),
        ("expenses", False),
        ("commissions", False),
        ("net_cf", True),
    ]
    for o in result.outputs:
        w = np.array(o.values)
        assert w.size == SCENARIOS and o.statistics.mean == np.mean(w) and o.statistics.std == np.std(w, ddof=1)
    means = {m.name: m.mean for m in s.output_means}
    assert list(means) == [o.name for o in result.outputs] and means["net_cf"] == s.mean
    assert means["premiums"] > 0 and means["claims"] > 0
    net = means["premiums"] - means["claims"] - means["expenses"] - means["commissions"]
    assert net == pytest.approx(s.mean, rel=1e-9)


def test_events_in_sequence_and_watch_replays_exactly_the_missing_ones(mesh: Mesh) -> None:
    address = mesh.gateways[2].address
    events = submit(address, spec(mesh.package_hash, "pol", SCENARIOS, chunk_blocks=1))
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    k = kinds(events)
    assert k[0] == "accepted" and k[-1] == "result"
    assert sum(x in ("result", "error", "cancelled") for x in k) == 1
    assert "progress" in k
    job_id = events[0].job_id
    done = [e.progress.blocks_done for e in events if e.WhichOneof("event") == "progress"]
    assert done == sorted(done) and done[-1] == 5
    # after the job ended: from 0, from the middle, from the end
    assert watch(address, job_id, 0) == events
    middle = len(events) // 2
    assert watch(address, job_id, middle) == events[middle:]
    assert watch(address, job_id, len(events)) == []
    job = get_job(address, job_id)
    assert job.state == S.JOB_STATE_SUCCEEDED and job.result.result_hash == events[-1].result.result_hash
    assert values(job.result) == values(events[-1].result)


def test_idempotency_key_returns_the_existing_job(mesh: Mesh) -> None:
    address = mesh.gateways[1].address
    first = submit(address, spec(mesh.package_hash, "pol", 5), key="same-key")
    again = submit(address, spec(mesh.package_hash, "pol", 5), key="same-key")
    assert again[0].job_id == first[0].job_id and again == first


def test_preview_reports_relative_difference_against_the_full_run(mesh: Mesh) -> None:
    address = mesh.gateways[3].address
    full = final(submit(address, spec(mesh.package_hash, "pol", SCENARIOS))).result
    assert not full.HasField("preview_relative_difference") and not full.preview
    preview_spec = spec(mesh.package_hash, "pol", SCENARIOS, preview=job_pb2.PreviewSpec(sample_rows=1500, seed=7))
    events = submit(address, preview_spec)
    assert events[0].accepted.chunks_total == 1
    result = final(events).result
    assert result.preview and result.policy_count == 1500
    assert result.HasField("preview_relative_difference")
    expected = (result.statistics.mean - full.statistics.mean) / abs(full.statistics.mean)
    assert result.preview_relative_difference == pytest.approx(expected, rel=1e-12)
    assert abs(result.preview_relative_difference) < 0.5
    # 8 random groups of ≤ 188 policies measure the sampling error; the interval says both parts
    u = result.preview_uncertainty
    assert u.sample_groups == 8 and u.sampling_degrees_of_freedom == 7 and u.confidence_level == 95
    assert u.scenario_standard_error == result.statistics.standard_error and u.sampling_standard_error > 0
    assert u.standard_error == pytest.approx((u.sampling_standard_error**2 + u.scenario_standard_error**2) ** 0.5)
    assert u.half_width > 1.96 * u.standard_error and u.sampling_half_width > 2.36 * u.sampling_standard_error
    assert not full.HasField("preview_uncertainty")
    # the same sample gives the same preview
    assert final(submit(address, preview_spec)).result.result_hash == result.result_hash


def _status(address: str, job_spec: job_pb2.JobSpec) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        submit(address, job_spec)
    return info.value


def test_bad_specs(mesh: Mesh) -> None:
    address = mesh.gateways[2].address
    err = _status(address, spec("ab" * 32, "pol", 5))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "ab" * 32 in (err.details() or "")
    err = _status(address, spec(mesh.package_hash, "no_such_dataset", 5))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "no_such_dataset" in (err.details() or "")
    err = _status(address, spec(mesh.package_hash, "pol", 0))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "scenarios.count" in (err.details() or "")
    # a bad row: the job is refused at submit (the dataset against the model's rules), naming the row
    err = _status(address, spec(mesh.package_hash, "bad", 5, chunk_blocks=1))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"dataset.rows[{BAD_ROW}].age_at_entry" in (err.details() or "")
    # nothing else disturbed: the next job on the same engines succeeds with the reference hash
    expected = in_process_hash(mesh.archive, mesh.table, 5)
    assert final(submit(address, spec(mesh.package_hash, "pol", 5))).result.result_hash == expected


def test_grpcurl_shows_readable_json(mesh: Mesh) -> None:
    address = mesh.gateways[1].address
    events = submit(address, spec(mesh.package_hash, "pol", 5))
    job_id = events[0].job_id
    (job,) = grpcurl(address, "GetJob", {"job_id": job_id})
    assert job["job"]["state"] == "JOB_STATE_SUCCEEDED"
    assert job["job"]["result"]["resultHash"] == events[-1].result.result_hash
    outputs = job["job"]["result"]["outputs"]
    assert [o["name"] for o in outputs] == ["premiums", "claims", "expenses", "commissions", "net_cf"]
    assert outputs[-1]["primary"] and all(len(o["values"]) == 5 for o in outputs)
    watched = grpcurl(address, "WatchJob", {"job_id": job_id, "after_sequence": 0})
    assert [int(w["event"]["sequence"]) for w in watched] == [e.sequence for e in events]
    assert "accepted" in watched[0]["event"] and "result" in watched[-1]["event"]
