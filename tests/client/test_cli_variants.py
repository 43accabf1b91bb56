"""`livecalc submit --variant / --variants`: the syntax, and a variant job end to end through the CLI.

The parsing tests need no mesh; the end-to-end one submits the small mesh's package with two
variants (one from --variant, one from a --variants file), reads the sensitivities table the
command prints, the results JSON it writes and `jobs get`'s table, and checks a variant's
result hash against a job on its derived package (submitted through the CLI as well).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livecalc.gateway.v1 import job_pb2
from services.client.cli_variants import parse_change, parse_variant, read_variants, variant_lines
from services.common.errors import InvalidArgument
from tests.client.clitools import livecalc_in_process
from tests.client.conftest import InProcessSmallMesh


def test_the_change_syntax() -> None:
    v = parse_variant("mort_down: table.mortality*0.85, param.expense_acq+10, param.dyn_lapse_beta=0")
    assert v.name == "mort_down"
    assert list(v.overrides) == [
        job_pb2.Override(table="mortality", scale=0.85),
        job_pb2.Override(parameter="expense_acq", shift=10.0),
        job_pb2.Override(parameter="dyn_lapse_beta", value=0.0),
    ]
    # a shift down, in basis points or percent, converted exactly
    assert parse_change("table.curve-100bp", where="w") == job_pb2.Override(table="curve", shift=-0.01)
    assert parse_change("table.curve+-0.01", where="w") == job_pb2.Override(table="curve", shift=-0.01)
    assert parse_change("param.inflation + 0.5%", where="w") == job_pb2.Override(parameter="inflation", shift=0.005)
    assert parse_change("param.inflation=2%", where="w") == job_pb2.Override(parameter="inflation", value=0.02)
    # a scale or shift clamped to the declared bounds
    assert parse_change("table.mortality*1.15 clamped", where="w") == job_pb2.Override(
        table="mortality", scale=1.15, clamp=True
    )


def test_a_table_replaced_from_a_csv_file(tmp_path: Path) -> None:
    path = tmp_path / "lapse.csv"
    path.write_text("year,rate\n0,0.05\n")
    assert parse_change(f"table.lapse=@{path}", where="w") == job_pb2.Override(
        table="lapse", table_csv="year,rate\n0,0.05\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no_colon", "write it as 'NAME: CHANGE[, CHANGE…]'"),
        ("v:", "--variant v: no change given"),
        ("v: mortality*1.1", "'mortality*1.1' is not a change"),
        ("v: table.mortality*x", "'x' is not a number"),
        ("v: table.mortality*1.1bp", "'1.1bp' is not a number"),  # units for shifts and values only
        ("v: table.lapse=0.1", "a table is replaced by a CSV file: table.lapse=@FILE.csv"),
        ("v: table.lapse=@/no/such.csv", "cannot read /no/such.csv"),
        ("v: param.x=nan", "'nan' is not a finite number"),
        ("v: param.x=1 clamped", "'clamped' goes with a scale (*) or a shift (+, -)"),
    ],
)
def test_bad_variant_flags_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_variant(text)
    assert message in str(caught.value), caught.value


def test_variants_file(tmp_path: Path) -> None:
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"variants": [{"name": "a", "overrides": [{"table": "lapse", "scale": 0.5}]}]}))
    assert read_variants(path) == [job_pb2.Variant(name="a", overrides=[job_pb2.Override(table="lapse", scale=0.5)])]
    path.write_text(json.dumps([{"name": "a", "overrides": [{"table": "lapse", "factor": 0.5}]}]))
    with pytest.raises(InvalidArgument, match=r"variant 0: .*factor"):
        read_variants(path)


def test_the_table_shows_each_variant_against_the_base() -> None:
    stats = job_pb2.Statistics(mean=1000.0)
    result = job_pb2.JobResult(
        statistics=stats,
        result_hash="b" * 64,
        outputs=[job_pb2.OutputResult(name="net_cf", primary=True)],
        variants=[
            job_pb2.VariantResult(
                name="up",
                result_hash="c" * 64,
                statistics=job_pb2.Statistics(mean=1100.0),
                mean_change=100.0,
                relative_change=0.1,
            )
        ],
    )
    lines = variant_lines(result)
    assert lines[1] == "Sensitivities (1) against the base"
    assert lines[2].split() == ["variant", "mean", "net_cf", "change", "relative", "result", "hash"]
    assert lines[3].split() == ["(base)", "1,000", "b" * 64]
    assert lines[4].split() == ["up", "1,100", "+100", "+10.00", "%", "c" * 64]
    assert variant_lines(job_pb2.JobResult()) == []


def test_submit_with_variants_end_to_end(inprocess_small_mesh: InProcessSmallMesh, tmp_path: Path) -> None:
    gw = ["--address", inprocess_small_mesh.gateway]
    file = tmp_path / "variants.json"
    file.write_text(json.dumps([{"name": "rates_down", "overrides": [{"table": "curve", "shift": -0.01}]}]))
    out = tmp_path / "r.json"
    done = livecalc_in_process(
        "submit", "--package", str(inprocess_small_mesh.model_dir), "--dataset", "pol", "--scenarios", "4",
        "--variant", "lapse_down: table.lapse*0.5", "--variants", str(file), "--out", str(out), *gw,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Sensitivities (2) against the base" in done.stdout
    doc = json.loads(out.read_text())
    assert [v["name"] for v in doc["variants"]] == ["rates_down", "lapse_down"]
    assert doc["spec"]["variants"][1]["overrides"][0] == {"table": "lapse", "scale": 0.5, "clamp": False}
    rates_down = doc["variants"][0]
    assert rates_down["mean_change"] == rates_down["statistics"]["mean"] - doc["statistics"]["mean"]
    # lower discount rates make every present value larger in size: net_cf's mean moves
    assert rates_down["mean_change"] != 0
    row = next(line for line in done.stdout.splitlines() if line.startswith("rates_down"))
    assert row.split()[-1] == rates_down["result_hash"]

    alone = livecalc_in_process(
        "submit", "--package", rates_down["package_hash"], "--dataset", "pol", "--scenarios", "4", "--json", *gw
    )
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout)["result"]["result_hash"] == rates_down["result_hash"]

    shown = livecalc_in_process("jobs", "get", doc["job_id"], *gw)
    assert shown.returncode == 0, shown.stderr
    assert "Sensitivities (2) against the base" in shown.stdout and rates_down["result_hash"] in shown.stdout

    refused = livecalc_in_process(
        "submit", "--package", str(inprocess_small_mesh.model_dir), "--dataset", "pol",
        "--variant", "typo: table.mortalty*1.1", *gw,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "variant 'typo': no table 'mortalty' is declared" in refused.stderr, refused.stderr
