"""ValidateDataset judges rows by the declaration a request carries, for any product: a savings-like
declaration (a category column, a cross-column rule, a rule reading a table bound) against the
real data service on an in-process gRPC server, asked by the gateway's own client; and the
`livecalc datasets validate` command, remote and on a local file before upload."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from grpc import aio

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from services.common.config import ServerConfig
from services.common.errors import InvalidArgument, LivecalcError
from services.common.server import RunningServer, ServiceBinding, start_server
from services.common.storage.local import LocalStorage
from services.data import cli as data_cli
from services.data.catalog import Catalog
from services.data.generate import generate
from services.data.servicer import DataServicer
from services.gateway.admission import DatasetRules
from services.gateway.inputs import DataServiceDatasets, Declaration, Upstream, declaration_of
from services.valuation.packages.canonical import canonical_json

pytestmark = pytest.mark.anyio

RATES_CSV = "year,rate\n" + "".join(f"{y},0.01\n" for y in range(81))  # years 0..80
INTERFACE: dict[str, Any] = {
    "abi": 2,
    "policy": {
        "key": "contract_id",
        "columns": [
            {"name": "contract_id", "type": "int64", "required": True},
            {"name": "product", "type": "category", "values": ["unit_linked", "with_profits"], "required": True},
            {"name": "age", "type": "int32", "required": True, "min": 18, "max": 99},
            {"name": "term", "type": "int32", "required": True, "min": 1},
            {"name": "fund", "type": "float64", "required": True, "min": 0},
            {"name": "guarantee", "type": "float64", "min": 0},
        ],
        "rules": [
            {
                "rule": "guarantee_cap",
                "column": "guarantee",
                "when": "product == 1",
                "check": "guarantee <= fund",
                "message": "must be ≤ fund for with-profits",
            },
            {
                "rule": "coverage",
                "column": "term",
                "check": "age + term <= rates.year.last + 1",
                "message": "runs beyond the rate table",
            },
        ],
        "horizon_months": "12 * term",
    },
    "tables": [{"name": "rates", "file": "assumptions/rates.csv", "axes": [{"name": "year", "first": 0}]}],
    "outputs": [{"name": "pv", "primary": True}],
}
CONFIG: dict[str, Any] = {"name": "savings", "version": "1.0.0", "model": "savings", "interface": INTERFACE}
HEADER = "contract_id,product,age,term,fund,guarantee\n"
ROWS = [
    "1,unit_linked,30,10,1000,",  # valid
    "2, With_Profits ,40,20,2000,1500",  # valid: a category text trimmed, any case
    "3,with_profits,40,20,2000,2500",  # guarantee above the fund of a with-profits contract
    "4,bank,40,20,2000,",  # not a product
    "5,unit_linked,70,20,2000,",  # 70 + 20 > 80 + 1: beyond the rate table
    "3,unit_linked,40,20,2000,",  # a repeated key
    "7,1,40,20,2000,100",  # a category code: valid
    "8,unit_linked,40,20,-5,",  # a negative fund
]


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """The savings package as an author's directory (only what validation reads)."""
    root = tmp_path / "savings"
    (root / "assumptions").mkdir(parents=True)
    (root / "livecalc.config.json").write_text(json.dumps(CONFIG, indent=2))
    (root / "assumptions" / "rates.csv").write_text(RATES_CSV)
    return root


@pytest.fixture
def datasets(tmp_path: Path) -> Path:
    root = tmp_path / "datasets"
    root.mkdir()
    (root / "savings.csv").write_text(HEADER + "\n".join(ROWS) + "\n")
    codes = pa.table(
        {
            "contract_id": pa.array([1, 2, 3], pa.int64()),
            "product": pa.array([0, 1, 1], pa.int64()),  # codes, not texts
            "age": pa.array([30, 40, 50], pa.int64()),
            "term": pa.array([10, 20, 30], pa.int64()),
            "fund": [100.0, 200.0, 300.0],
            "guarantee": [None, 50.0, 300.0],
        }
    )
    pq.write_table(codes, root / "codes.parquet")
    generate(root / "pol.csv", 500, 7)
    return root


@pytest.fixture
async def data(datasets: Path) -> AsyncIterator[str]:
    """The data service's servicer on a real gRPC server (in this process); yields its address."""
    servicer = DataServicer(Catalog(LocalStorage(datasets)))
    running: RunningServer = await start_server(
        ServerConfig(service="data", port=0, grace_seconds=0, drain_seconds=0),
        [
            ServiceBinding(
                "livecalc.data.v1.DataService",
                lambda s: data_service_pb2_grpc.add_DataServiceServicer_to_server(servicer, s),
            )
        ],
    )
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        await running.stop()


def declaration(package: Path) -> Declaration:
    files = {"assumptions/rates.csv": (package / "assumptions" / "rates.csv").read_bytes()}
    return declaration_of(CONFIG, files)


async def test_a_custom_declaration_judges_every_row(data: str, package: Path) -> None:
    client = DataServiceDatasets(data)
    try:
        sent = declaration(package)
        assert sent.table_bounds == (("rates.year.last", 80.0),)  # from the package's table, not declared
        verdict = await client.validate("savings", sent)
    finally:
        await client.close()
    assert not verdict.valid and verdict.missing_columns == ()
    assert {(v.row, v.column, v.rule) for v in verdict.violations} == {
        (2, "guarantee", "guarantee_cap"),
        (3, "product", "enum"),
        (4, "term", "coverage"),
        (5, "contract_id", "duplicate_contract_id"),
        (7, "fund", "range"),
    }
    messages = {v.rule: v.message for v in verdict.violations}
    assert messages["enum"] == "product must be 'unit_linked' or 'with_profits' (got 'bank')"
    assert messages["guarantee_cap"] == "guarantee must be ≤ fund for with-profits"
    assert messages["duplicate_contract_id"] == "contract_id 3 repeats an earlier row"
    assert messages["range"] == "fund must be finite and ≥ 0 (got -5)"
    assert dict(verdict.rule_counts) == {
        "coverage": 1,
        "duplicate_contract_id": 1,
        "enum": 1,
        "guarantee_cap": 1,
        "range": 1,
    }


async def test_the_gateway_refuses_a_dataset_by_the_packages_rules(data: str, package: Path) -> None:
    client = DataServiceDatasets(data)
    try:
        rules = DatasetRules(client)
        with pytest.raises(InvalidArgument) as info:
            await rules.check("savings", "", declaration(package), "t")
        await rules.check("codes", "", declaration(package), "t")  # category codes: valid
        await rules.check("pol", "", "term_life", "t")  # a package without a declaration: term life's
        assert len(rules._verdicts) == 3
    finally:
        await client.close()
    text = info.value.details()
    assert "does not meet the model 'savings'" in text and "5 rule violations" in text
    assert "dataset.rows[2].guarantee: guarantee must be ≤ fund for with-profits" in text


def test_the_verdict_key_is_the_declaration() -> None:
    a = Declaration("savings", canonical_json(INTERFACE).decode(), (("rates.year.last", 80.0),))
    b = Declaration("savings", canonical_json(INTERFACE).decode(), (("rates.year.last", 60.0),))
    c = Declaration("renamed", a.interface_json, a.table_bounds)
    assert a.digest != b.digest and len(a.digest) == 64
    assert Declaration("term_life").digest == "model:term_life"
    assert c.digest == a.digest  # the same rules, whatever the package calls its model


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"interface_json": "{nope"}, "interface_json is not JSON"),
        (
            {"interface_json": json.dumps({**INTERFACE, "abi": 1})},
            "interface_json is not a valid declaration (interface_json.abi: must be 2",
        ),
        ({"interface_json": canonical_json(INTERFACE).decode()}, "table_bounds: the rules read table bounds not given"),
        (
            {"interface_json": canonical_json(INTERFACE).decode(), "table_bounds": {"rates.year": 80.0}},
            "is not TABLE.AXIS.first",
        ),
        ({"model": "savings"}, "unknown model 'savings'"),
    ],
)
async def test_a_request_without_usable_rules_is_invalid(data: str, change: dict[str, Any], expected: str) -> None:
    async with aio.insecure_channel(data) as channel:
        stub = data_service_pb2_grpc.DataServiceStub(channel)
        with pytest.raises(aio.AioRpcError) as info:
            await stub.ValidateDataset(data_service_pb2.ValidateDatasetRequest(dataset_id="savings", **change))
    assert info.value.code().name == "INVALID_ARGUMENT"
    assert expected in (info.value.details() or ""), info.value.details()


async def test_the_upstream_error_of_a_broken_request_keeps_its_status(data: str) -> None:
    client = DataServiceDatasets(data)
    try:
        with pytest.raises(Upstream) as info:
            await client.validate("savings", Declaration("savings"))
    finally:
        await client.close()
    assert info.value.code.name == "INVALID_ARGUMENT"


# the command


def livecalc(*args: str) -> int:
    """`livecalc datasets …` in this process (the command group as the CLI registers it)."""
    parser = argparse.ArgumentParser(prog="livecalc")
    data_cli.register(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args(["datasets", *args])
    try:
        return int(parsed.func(parsed))
    except LivecalcError as exc:
        print(f"livecalc: error: {exc.details()}")
        return 1


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "local"
    folder.mkdir()
    yield folder
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in folder.iterdir() if p.suffix == ".csv")


def test_a_local_file_is_validated_before_upload_without_a_service(
    local: Path, package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = local / "good.csv"
    good.write_text(HEADER + "\n".join(ROWS[:2] + ROWS[6:7]) + "\n")
    assert livecalc("validate", "--file", str(good), "--package", str(package), "--address", "127.0.0.1:1") == 0
    assert "good.csv: valid, 3 rows checked" in capsys.readouterr().out

    bad = local / "bad.csv"
    bad.write_text(HEADER + "\n".join(ROWS) + "\n")
    assert livecalc("validate", "--file", str(bad), "--package", str(package), "--json") == 1
    out = capsys.readouterr().out
    report = json.loads(out[: out.rindex("}") + 1])
    assert report["dataset_id"] == "bad.csv" and report["violation_count"] == 5
    assert {v["rule"] for v in report["violations"]} == {
        "guarantee_cap",
        "enum",
        "coverage",
        "duplicate_contract_id",
        "range",
    }
    assert "bad.csv' has 5 violation(s)" in out


def test_a_local_file_without_a_package_is_judged_as_term_life(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policies = local / "pol.csv"
    generate(policies, 200, 3)
    assert livecalc("validate", "--file", str(policies)) == 0
    assert "pol.csv: valid, 200 rows checked" in capsys.readouterr().out
    text = pacsv.read_csv(policies)
    pacsv.write_csv(text.slice(0, 5), local / "five.csv")
    assert livecalc("validate", "--file", str(local / "five.csv"), "--model", "savings") == 1
    assert "only term_life is known by name" in capsys.readouterr().out


def test_a_semicolon_file_gets_a_hint(local: Path, package: Path, capsys: pytest.CaptureFixture[str]) -> None:
    semi = local / "semi.csv"
    semi.write_text((HEADER + "\n".join(ROWS[:2]) + "\n").replace(",", ";"))
    assert livecalc("validate", "--file", str(semi), "--package", str(package)) == 1
    captured = capsys.readouterr()
    assert "missing columns: contract_id, product, age, term, fund" in captured.out
    assert "hint: the header looks separated by semicolons" in captured.err
    tabs = local / "tabs.csv"
    tabs.write_text((HEADER + "\n".join(ROWS[:2]) + "\n").replace(",", "\t"))
    assert livecalc("validate", "--file", str(tabs), "--package", str(package)) == 1
    assert "separated by tabs" in capsys.readouterr().err


def test_the_command_names_one_dataset_or_one_file(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert livecalc("validate") == 1
    assert livecalc("validate", "pol", "--file", str(local / "x.csv")) == 1
    assert capsys.readouterr().out.count("name one of: a DATASET on the data service, or a local --file") == 2
    assert livecalc("validate", "--file", str(local / "x.csv")) == 1
    assert "no such file" in capsys.readouterr().out
    assert livecalc("validate", "--file", str(local / "x.csv"), "--package", str(local / "nowhere")) == 1
    assert "neither a package directory, an archive nor a package hash" in capsys.readouterr().out


async def test_a_dataset_on_the_service_is_judged_by_a_local_package(
    data: str, package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("validate", "savings", "--package", str(package), "--address", data, "--max-violations", "10")
    assert await anyio.to_thread.run_sync(lambda: livecalc(*args)) == 1
    out = capsys.readouterr().out
    assert "savings (sha256:" in out and "INVALID, 8 rows checked" in out
    assert "row 2: [guarantee_cap] guarantee must be ≤ fund for with-profits" in out
    assert await anyio.to_thread.run_sync(lambda: livecalc("validate", "pol", "--address", data)) == 0
