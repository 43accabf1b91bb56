"""A hung engine found by keepalive PINGs, not by the stall limit.

A second gateway on the fault mesh waits 120 s for a silent chunk (`--chunk-stall-seconds`) but
PINGs its engines every second (`--engine-keepalive-seconds 1`). A SIGSTOPped engine cannot
answer (gRPC's own threads are stopped with it), so the connection and its calls fail as
UNAVAILABLE after about two seconds and the chunk moves: the job ends with the result hash of the
same job run without a fault, long before the stall limit could have fired.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from services.common.errors import InvalidArgument
from services.gateway.engines import DEFAULT_KEEPALIVE_SECONDS, channel_options
from services.gateway.server import resolve_jobs_config
from tests.engine.mesh import stochastic_package, upload_package
from tests.faults.faultmesh import FaultMesh, Job, fault_mesh, hang_engine
from tests.gateway.jobmesh import kinds, submit
from tests.logrecords import matching, records
from tests.support import ServiceProcess

pytestmark = pytest.mark.timeout(180)
STALL_SECONDS = 120.0
KEEPALIVE_SECONDS = 1.0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultMesh]:
    yield from fault_mesh(tmp_path_factory.mktemp("keepalive"))


@pytest.fixture(scope="module")
def pinging(mesh: FaultMesh) -> Iterator[ServiceProcess]:
    """A gateway over the same engines that only keepalive can tell of a hung one."""
    gateway = mesh.services.gateway(
        mesh.data,
        mesh.engines,
        store="gw-keepalive",
        extra=["--chunk-stall-seconds", str(STALL_SECONDS), "--engine-keepalive-seconds", str(KEEPALIVE_SECONDS)],
    )
    archive = stochastic_package(mesh.services.tmp / "model-keepalive")
    assert upload_package(gateway.address, archive) == mesh.package_hash
    yield gateway


def test_a_stopped_engine_is_dropped_by_keepalive_long_before_the_stall_limit(
    mesh: FaultMesh, pinging: ServiceProcess
) -> None:
    baseline = submit(pinging.address, mesh.job_spec())
    assert baseline[-1].WhichOneof("event") == "result", kinds(baseline)
    victim = mesh.engines[2]
    job = Job(pinging.address, mesh.job_spec())
    job.folded(2)
    before = len(pinging.log())
    events, elapsed = hang_engine(job, victim)
    assert events[-1].WhichOneof("event") == "result", kinds(events)
    assert events[-1].result.result_hash == baseline[-1].result.result_hash
    assert elapsed < STALL_SECONDS / 2, f"the job ended {elapsed:.1f} s after the stop: keepalive did not fire"
    log = pinging.log()[before:]
    # the victim's chunk was requeued because its calls failed (keepalive), not because it went
    # silent; a chunk it had just been given and not yet answered on is requeued as one it "did
    # not take" (the attempt is not counted against the chunk)
    requeued = [
        *matching(log, "chunk failed on an engine; requeued", engine=victim.address),
        *matching(log, "engine did not take the chunk; requeued", engine=victim.address),
    ]
    shown = [line for line in log.splitlines() if "requeued" in line or "engine" in line.lower()][-20:]
    assert requeued and all(r.fields["code"] != "STALLED" for r in requeued), shown
    assert not [r for r in records(log) if r.fields.get("code") == "STALLED"], log
    print(f"\nengine SIGSTOP, keepalive {KEEPALIVE_SECONDS:g} s: job ended {elapsed:.2f} s after the stop, same hash")


def test_keepalive_settings() -> None:
    """Flag over LIVECALC_ENGINE_KEEPALIVE_SECONDS over 10 s; 0 turns the PINGs off; the ping
    timeout follows, so a PING already in flight cannot hold the keepalive back for 60 s."""

    def seconds(flag: float | None, env: dict[str, str]) -> float:
        args = argparse.Namespace(engine_keepalive_seconds=flag)
        return resolve_jobs_config(args, {"LIVECALC_ENGINES": "127.0.0.1:1", **env}).keepalive_seconds

    assert seconds(None, {}) == DEFAULT_KEEPALIVE_SECONDS == 10.0
    assert seconds(None, {"LIVECALC_ENGINE_KEEPALIVE_SECONDS": "2.5"}) == 2.5
    assert seconds(0.0, {"LIVECALC_ENGINE_KEEPALIVE_SECONDS": "2.5"}) == 0.0
    for bad in ("-1", "soon"):
        with pytest.raises(InvalidArgument, match="engine keepalive seconds"):
            seconds(None, {"LIVECALC_ENGINE_KEEPALIVE_SECONDS": bad})
    options = dict(channel_options(2.5))
    assert options["grpc.keepalive_time_ms"] == options["grpc.keepalive_timeout_ms"] == 2500
    assert options["grpc.http2.ping_timeout_ms"] == 2500
    assert "grpc.keepalive_time_ms" not in dict(channel_options(0))
    assert dict(channel_options(0.2))["grpc.keepalive_time_ms"] == 1000  # at least 1 s
