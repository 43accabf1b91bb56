"""Sensitivities in one job (issue 21 item 3) through an in-process mesh (tests.inprocess).

One job on the stochastic term-life package (4 blocks, the last partial; 2-block chunks; 5
scenarios) carries three variants: mortality × 1.15 with every rate clamped at the table's
declared max of 1, lapse × 0.5, and both expense parameters × 1.1. Each
variant's result hash must equal (a) a separate job on the package the gateway derived for it
(VariantResult.package_hash) and (b) a separate job on a package this test builds itself by
editing the package directory's files (the two tables and expenses.json) and uploading it.
The base is the job as it would be without variants. Bad variants are refused at submit,
INVALID_ARGUMENT naming the variant and the field, and nothing runs.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from livecalc.gateway.v1 import job_pb2, job_service_pb2
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.packages.package import build_directory
from services.valuation.statistics import relative_difference
from tests.engine.mesh import datasets_dir, policies_csv, stochastic_package, upload_package
from tests.gateway.jobmesh import kinds, spec, stub, submit
from tests.inprocess import threaded_mesh

pytestmark = pytest.mark.timeout(120)

ROWS = 4 * BLOCK_SIZE - 300
SCENARIOS = 5
CHUNK_BLOCKS = 2


@dataclass
class Mesh:
    gateway: str
    package_hash: str
    model_dir: Path
    tmp: Path


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("variants")
    root = datasets_dir(tmp)
    policies_csv(root / "pol.csv", ROWS)
    model_dir = tmp / "model"
    archive = stochastic_package(model_dir)
    with threaded_mesh(tmp, datasets=root) as served:
        yield Mesh(served.gateway, upload_package(served.gateway, archive), model_dir, tmp)


def variant(name: str, *overrides: job_pb2.Override) -> job_pb2.Variant:
    return job_pb2.Variant(name=name, overrides=list(overrides))


MORTALITY_UP = variant("mort_up", job_pb2.Override(table="mortality", scale=1.15, clamp=True))
LAPSE_DOWN = variant("lapse_down", job_pb2.Override(table="lapse", scale=0.5))
EXPENSES_UP = variant(
    "expenses_up",
    job_pb2.Override(parameter="expense_acq", scale=1.1),
    job_pb2.Override(parameter="expense_maint", scale=1.1),
)


def result_of(address: str, job: job_pb2.JobSpec) -> tuple[job_pb2.JobResult, list[job_pb2.JobEvent]]:
    events = submit(address, job)
    assert events[-1].WhichOneof("event") == "result", events[-1]
    return events[-1].result, events


def job_on(package_hash: str, **fields: object) -> job_pb2.JobSpec:
    return spec(package_hash, "pol", SCENARIOS, chunk_blocks=CHUNK_BLOCKS, **fields)


def edited_package(model_dir: Path, dest: Path) -> dict[str, Path]:
    """Copies of the package directory edited by hand: the mortality rates × 1.15 capped at 1, the
    lapse table's rates × 0.5, and the acquisition and maintenance expenses × 1.1 (float64
    arithmetic, written with repr), by variant name."""
    mortality, lapse, expenses = dest / "mortality", dest / "lapse", dest / "expenses"
    for copy in (mortality, lapse, expenses):
        shutil.copytree(model_dir, copy)
    path = mortality / "assumptions" / "mortality.csv"
    rows = list(csv.reader(io.StringIO(path.read_text())))
    out = [rows[0]] + [[row[0], *(repr(min(float(q) * 1.15, 1.0)) for q in row[1:])] for row in rows[1:]]
    path.write_text("\n".join(",".join(r) for r in out) + "\n")
    path = lapse / "assumptions" / "lapse.csv"
    rows = list(csv.reader(io.StringIO(path.read_text())))
    out = [rows[0]] + [[label, repr(float(rate) * 0.5)] for label, rate in rows[1:]]
    path.write_text("\n".join(",".join(r) for r in out) + "\n")
    path = expenses / "assumptions" / "expenses.json"
    doc = json.loads(path.read_text())
    doc["acquisition"] = doc["acquisition"] * 1.1
    doc["maintenance"] = doc["maintenance"] * 1.1
    path.write_text(json.dumps(doc))
    return {"mort_up": mortality, "lapse_down": lapse, "expenses_up": expenses}


def test_each_variant_equals_its_package_run_alone(mesh: Mesh) -> None:
    base_alone, _ = result_of(mesh.gateway, job_on(mesh.package_hash))
    variants = [MORTALITY_UP, LAPSE_DOWN, EXPENSES_UP]
    result, events = result_of(mesh.gateway, job_on(mesh.package_hash, variants=variants))

    # one job: the base and the variants, progress over all four passes
    accepted = events[0].accepted
    assert accepted.blocks_total == 4 * 4 and accepted.chunks_total == 4 * 2
    progress = [e.progress for e in events if e.WhichOneof("event") == "progress"]
    assert [p.blocks_done for p in progress] == sorted(p.blocks_done for p in progress)
    assert progress[-1].blocks_done == progress[-1].blocks_total == 16
    assert progress[-1].policies_done == 4 * ROWS and result.policy_count == ROWS
    assert kinds(events)[-1] == "result"

    # the base is the job without variants
    assert result.result_hash == base_alone.result_hash and result.package_hash == mesh.package_hash
    assert [v.name for v in result.variants] == ["mort_up", "lapse_down", "expenses_up"]
    by_hand = {
        name: upload_package(mesh.gateway, build_directory(directory, source_date_epoch=0)[0])
        for name, directory in edited_package(mesh.model_dir, mesh.tmp / "edited").items()
    }
    for v in result.variants:
        assert v.result_hash != result.result_hash, v.name  # the change moved the result
        # (a) the package the gateway derived, run alone
        derived, _ = result_of(mesh.gateway, job_on(v.package_hash))
        assert derived.result_hash == v.result_hash, v.name
        assert derived.statistics == v.statistics, v.name
        assert [o.statistics for o in derived.outputs] == [o.statistics for o in v.outputs], v.name
        # (b) the package edited by hand, run alone
        edited, _ = result_of(mesh.gateway, job_on(by_hand[v.name]))
        assert edited.result_hash == v.result_hash, v.name
        assert v.mean_change == v.statistics.mean - result.statistics.mean
        assert v.relative_change == relative_difference(v.statistics.mean, result.statistics.mean)
    base_means = {m.name: m.mean for m in result.statistics.output_means}
    # heavier mortality: more claims
    mortality_means = {m.name: m.mean for m in result.variants[0].statistics.output_means}
    assert mortality_means["claims"] > base_means["claims"]
    # fewer lapses keep more policies paying (and dying): premiums and claims both grow
    lapse_means = {m.name: m.mean for m in result.variants[1].statistics.output_means}
    assert lapse_means["premiums"] > base_means["premiums"] and lapse_means["claims"] > base_means["claims"]
    # higher expenses: the expenses output grows, claims stay
    expense_means = {m.name: m.mean for m in result.variants[2].statistics.output_means}
    assert expense_means["expenses"] > base_means["expenses"]
    assert expense_means["claims"] == base_means["claims"]


def refusal(address: str, job: job_pb2.JobSpec) -> str:
    channel, jobs = stub(address)
    with channel:
        call = jobs.SubmitJob(job_service_pb2.SubmitJobRequest(spec=job), timeout=60)
        with pytest.raises(grpc.RpcError) as caught:
            list(call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    return str(caught.value.details())


@pytest.mark.parametrize(
    ("variants", "expected"),
    [
        (
            [variant("typo", job_pb2.Override(table="mortalty", scale=1.1))],
            "spec.variants[0].overrides[0].table: variant 'typo': no table 'mortalty' is declared "
            "(tables: mortality, lapse, curve)",
        ),
        (
            [variant("v", job_pb2.Override(table="lapse", value=0.1))],
            "spec.variants[0].overrides[0].table: variant 'v': a table takes scale, shift, table_csv, not value",
        ),
        (
            [variant("csv", job_pb2.Override(table="lapse", table_csv="year,rate\n0,0.1\n1,lots\n"))],
            "spec.variants[0].overrides[0].table: variant 'csv': table lapse (assumptions/lapse.csv): "
            "line 3: 'lots' is not a number",
        ),
        (
            [variant("csv", job_pb2.Override(table="lapse", table_csv="year,rate\n1,0.1\n"))],
            "table lapse (assumptions/lapse.csv): policy_year labels start at 1; the declaration says first 0",
        ),
        (
            [variant("up", job_pb2.Override(table="lapse", scale=20.0))],
            "spec.variants[0].overrides[0].table: variant 'up': table lapse × 20.0 leaves the table outside "
            "its declaration: value at policy_year 0 is 2.0; values must be finite and ≥ 0 and ≤ 1",
        ),
        (
            [variant("mort_up", job_pb2.Override(table="mortality", scale=1.15))],
            "spec.variants[0].overrides[0].table: variant 'mort_up': table mortality × 1.15 leaves the table "
            "outside its declaration: value at age 112, select_year 4 is 1.0636095674097648; values must be finite "
            "and ≥ 0 and ≤ 1, and more (clamp sets values past a declared min or max to it)",
        ),
        (
            [variant("c", job_pb2.Override(table="lapse", table_csv="year,rate\n0,0.1\n", clamp=True))],
            "spec.variants[0].overrides[0].clamp: variant 'c': clamp goes with scale or shift",
        ),
        (
            [variant("neg", job_pb2.Override(parameter="expense_acq", value=-5.0))],
            "spec.variants[0].overrides[0].parameter: variant 'neg': must be ≥ 0 (parameter expense_acq), got -5",
        ),
        ([LAPSE_DOWN, LAPSE_DOWN], "spec.variants[1].name: variant 'lapse_down' is named twice"),
        ([variant("bad name!", job_pb2.Override(table="lapse", scale=0.5))], "spec.variants[0].name"),
        ([variant("empty")], "spec.variants[0].overrides: variant 'empty' changes nothing"),
    ],
)
def test_bad_variants_are_refused(mesh: Mesh, variants: list[job_pb2.Variant], expected: str) -> None:
    details = refusal(mesh.gateway, job_on(mesh.package_hash, variants=variants))
    assert expected in details, details


def test_variants_with_a_preview_are_refused(mesh: Mesh) -> None:
    job = job_on(mesh.package_hash, variants=[LAPSE_DOWN], preview=job_pb2.PreviewSpec(sample_rows=100, seed=1))
    assert "spec.variants: a preview values no variants" in refusal(mesh.gateway, job)


def test_more_than_32_variants_are_refused(mesh: Mesh) -> None:
    many = [variant(f"v{i}", job_pb2.Override(table="lapse", scale=0.5)) for i in range(33)]
    assert "has 33 variants; at most 32" in refusal(mesh.gateway, job_on(mesh.package_hash, variants=many))
