"""Issue 22 (2, 3): the CLI's conventions against a mesh of the real servicers in this process
(tests.inprocess: data, engine, gateway), each command run by `livecalc`'s own `main` in this
process too, its stdout, stderr and exit status captured; the shell's `$(livecalc …)` runs the
console script.

- One address: the gateway's, named once — here by the environment variable LIVECALC_ADDRESS —
  serves every command, datasets included (the gateway forwards DataService); a saved context
  does the same, and --address beats both.
- Unique prefixes (and START…END) of job ids and package hashes; ambiguous or unknown ones are
  one clear line.
- `submit --detach` prints the job id alone on stdout: `J=$(livecalc submit … --detach)` works.
- Every table has a header row.
- `--json`: one job document shape wherever a job is printed, 64-bit integers as integers.
- `jobs wait` (exit status from the end state), the cancel reason, `jobs list --label`,
  `package upload DIR`, `run --local --package P --dataset D`, `datasets validate FILE`, and an
  upload of an invalid dataset refused at once.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from livecalc.gateway.v1 import job_pb2
from services.client.report import JOB_HEADER
from tests.client.clitools import LIVECALC, hash_line, livecalc_in_process
from tests.client.conftest import InProcessSmallMesh
from tests.support import ROOT

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

JOB_ID = re.compile(r"job-\d{8}-\d{6}-[0-9a-f]{8}")
#: The job document's keys: every Job field, in proto order.
JOB_KEYS = [f.name for f in job_pb2.Job.DESCRIPTOR.fields]

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def mesh(inprocess_small_mesh: InProcessSmallMesh) -> InProcessSmallMesh:
    """The module's mesh, in this process."""
    return inprocess_small_mesh


@pytest.fixture(scope="module")
def env(mesh: InProcessSmallMesh) -> dict[str, str]:
    """The gateway's address named once, by environment variable; a config file of the test's own."""
    return {"LIVECALC_ADDRESS": mesh.gateway, "LIVECALC_CONFIG": str(mesh.tmp / "config.json")}


@pytest.fixture(scope="module")
def lc(env: dict[str, str]) -> Run:
    """`livecalc ARGV…` (in this process) with no --address: the environment names the gateway."""

    def run(*argv: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return livecalc_in_process(*argv, env={**env, **(extra or {})})

    return run


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(done))


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code and done.stdout == "", (done.returncode, done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("livecalc: error: "), done.stderr
    return done.stderr


@pytest.fixture(scope="module")
def package_hash(lc: Run, mesh: InProcessSmallMesh) -> str:
    """The mesh's package, uploaded as a directory (`package upload DIR` builds it first)."""
    doc = as_json(lc("package", "upload", str(mesh.model_dir), "--json"))
    return str(doc["package"]["package_hash"])


def test_one_address_by_environment_variable_serves_every_command(
    lc: Run, mesh: InProcessSmallMesh, package_hash: str, tmp_path: Path
) -> None:
    data = ["--address", mesh.data]
    # datasets through the gateway are the data service's, answer for answer
    assert as_json(lc("datasets", "list", "--json")) == as_json(lc("datasets", "list", "--json", *data))
    sample = ["datasets", "sample", "pol", "--n", "4", "--seed", "9", "--json"]
    assert as_json(lc(*sample)) == as_json(lc(*sample, *data))
    assert as_json(lc("datasets", "schema", "pol", "--json"))["columns"][0]["name"] == "policy_id"
    assert as_json(lc("datasets", "validate", "pol", "--json"))["valid"] is True
    # an upload streams through the gateway; the data service holds it
    copy = tmp_path / "copy.csv"
    copy.write_bytes((mesh.root / "pol.csv").read_bytes())
    up = as_json(lc("datasets", "upload", str(copy), "--json"))
    assert up["dataset_id"] == "copy" and up["row_count"] == mesh.table.num_rows
    assert as_json(lc("datasets", "show", "copy", "--json", *data))["version"] == up["version"]
    assert "deleted copy" in ok(lc("datasets", "delete", "copy"))
    missing = one_line_error(lc("datasets", "show", "copy"))
    assert "not_found" in missing or "does not exist" in missing
    # ReadRows (a server stream) through the gateway, message for message
    request = data_service_pb2.ReadRowsRequest(dataset_id="pol", start_row=0, end_row=100)
    streams = []
    for address in (mesh.gateway, mesh.data):
        with grpc.insecure_channel(address) as channel:
            stub = data_service_pb2_grpc.DataServiceStub(channel)
            streams.append([m.SerializeToString() for m in stub.ReadRows(request, timeout=30)])
    assert streams[0] == streams[1] and streams[0]
    # jobs and packages through the same address
    assert package_hash in ok(lc("package", "list"))
    job_id = ok(lc("submit", "--package", package_hash, "--dataset", "pol", "--scenarios", "5", "--detach")).strip()
    assert ok(lc("jobs", "wait", job_id)).startswith(f"{job_id}: succeeded")


def test_a_saved_context_names_the_address_and_the_flag_wins(lc: Run, mesh: InProcessSmallMesh) -> None:
    unset = {"LIVECALC_ADDRESS": ""}
    gateway = mesh.gateway
    ok(lc("config", "set-context", "mesh", "--address", gateway, extra=unset))
    ok(lc("config", "set-context", "nowhere", "--address", "127.0.0.1:1", extra=unset))
    assert "switched to context" in ok(lc("config", "use-context", "mesh", extra=unset))
    contexts = ok(lc("config", "get-contexts", extra=unset)).splitlines()
    assert contexts[0].split() == ["CURRENT", "NAME", "ADDRESS", "TOKEN", "TLS-CA"]
    assert contexts[1].split()[:3] == ["*", "mesh", gateway]
    shown = as_json(lc("config", "show", "--json", extra=unset))
    assert (shown["address"], shown["source"]) == (gateway, "context mesh")
    assert "pol" in ok(lc("datasets", "list", extra=unset))  # the context's address
    assert ok(lc("jobs", "list", extra=unset)).startswith("JOB ")  # and every other client command
    refused = one_line_error(lc("datasets", "list", "--address", "127.0.0.1:1", "--timeout", "3", extra=unset))
    assert "127.0.0.1:1" in refused  # --address beats the context
    ok(lc("config", "use-context", "nowhere", extra=unset))
    assert "pol" in ok(lc("datasets", "list"))  # LIVECALC_ADDRESS beats the context
    ok(lc("config", "delete-context", "nowhere", extra=unset))
    one_line_error(lc("config", "current-context", extra=unset))  # the current one was deleted


def test_submit_detach_prints_the_job_id_alone_for_a_shell(lc: Run, env: dict[str, str], package_hash: str) -> None:
    done = lc("submit", "--package", package_hash, "--dataset", "pol", "--scenarios", "5", "--detach")
    assert JOB_ID.fullmatch(ok(done).removesuffix("\n")), done.stdout  # nothing else on stdout
    assert "livecalc jobs watch" in done.stderr and "livecalc jobs cancel" in done.stderr
    script = (
        f'J=$("{LIVECALC}" submit --package {package_hash[:12]} --dataset pol --scenarios 5 --detach) && '
        f'"{LIVECALC}" jobs wait "$J" && echo "waited for $J"'
    )
    argv = ["bash", "-c", script]
    shell = subprocess.run(
        argv, capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, **env}, check=False
    )
    assert shell.returncode == 0, shell.stderr
    waited = shell.stdout.splitlines()[-1].removeprefix("waited for ")
    assert JOB_ID.fullmatch(waited) and f"{waited}: succeeded" in shell.stdout


def test_unique_prefixes_of_job_ids_and_package_hashes(lc: Run, package_hash: str, tmp_path: Path) -> None:
    jobs = [
        ok(lc("submit", "--package", package_hash[:10], "--dataset", "pol", "--scenarios", "5", "--detach")).strip()
        for _ in range(2)
    ]
    for job_id in jobs:
        ok(lc("jobs", "wait", job_id))
        assert ok(lc("jobs", "get", job_id[:-2])).startswith(f"job       {job_id}\n")  # a unique prefix
        assert as_json(lc("jobs", "get", f"{job_id[:8]}…{job_id[-6:]}", "--json"))["job_id"] == job_id
        assert ok(lc("jobs", "plot", job_id[:-1], "--out", str(tmp_path / f"{job_id}.png"))).startswith("wrote")
    ambiguous = one_line_error(lc("jobs", "get", "job-"))
    assert "matches" in ambiguous and all(j in ambiguous for j in jobs)  # the candidates are named
    assert "no job id matches 'job-0'" in one_line_error(lc("jobs", "get", "job-0"))
    shown = ok(lc("package", "show", package_hash[:8]))
    assert shown.startswith(package_hash)
    assert ok(lc("package", "show", f"{package_hash[:8]}…{package_hash[-4:]}")) == shown  # as the README prints it
    assert ok(lc("package", "show", f"{package_hash[:8]}...{package_hash[-4:]}")) == shown
    assert "no package hash matches" in one_line_error(lc("package", "show", "ffff0000"))
    no_such = one_line_error(lc("submit", "--package", "no-such-dir", "--dataset", "pol"))
    assert "no such file or directory, nor a package hash" in no_such


def test_every_table_has_a_header_row(lc: Run, package_hash: str, mesh: InProcessSmallMesh) -> None:
    ok(lc("submit", "--package", package_hash, "--dataset", "pol", "--scenarios", "5"))
    headers = {
        ("jobs", "list"): list(JOB_HEADER),
        ("package", "list"): ["PACKAGE", "NAME", "VERSION", "BYTES", "UPLOADED"],
        ("datasets", "list"): ["DATASET", "FORMAT", "ROWS", "BYTES", "VERSION"],
        ("datasets", "schema", "pol"): ["COLUMN", "TYPE", "NULLS"],
        ("config", "get-contexts"): ["CURRENT", "NAME", "ADDRESS", "TOKEN", "TLS-CA"],
    }
    for argv, header in headers.items():
        lines = ok(lc(*argv)).splitlines()
        assert lines[0].split() == header, (argv, lines[:2])
    sample = ok(lc("datasets", "sample", "pol", "--n", "2")).splitlines()
    assert sample[0].split() == ["row", *mesh.table.column_names]
    shown = ok(lc("package", "show", package_hash)).splitlines()
    assert ["NODE", "ENGINE", "INPUTS", "OUTPUTS"] in [line.split() for line in shown]
    assert ["ASSET", "BYTES", "SHA256"] in [line.split() for line in shown]


def test_one_json_shape_for_a_job_and_integers_as_integers(lc: Run, package_hash: str) -> None:
    common = ["--package", package_hash, "--scenarios", "5", "--json"]
    finished = as_json(lc("submit", "--dataset", "pol", *common))
    detached = as_json(lc("submit", "--dataset", "long", *common[:-1], "--scenarios", "1000", "--detach", "--json"))
    cancelled = as_json(lc("jobs", "cancel", detached["job_id"], "--reason", "shape test", "--json"))
    job_id = finished["job_id"]
    got = as_json(lc("jobs", "get", job_id, "--json"))
    waited = lc("jobs", "wait", job_id, "--json")
    listed = as_json(lc("jobs", "list", "--json"))["jobs"]
    documents = [finished, detached, cancelled, got, as_json(waited), *listed]
    for doc in documents:
        assert list(doc) == JOB_KEYS, list(doc)
        assert isinstance(doc["progress"]["policies_total"], int)  # int64: an integer, not a string
    assert finished["result"] == got["result"] == as_json(waited)["result"]  # the results document
    assert isinstance(got["result"]["policy_count"], int) and len(got["result"]["outputs"][0]["values"]) == 5
    assert list(listed[0]["result"] or {}) in ([], list(got["result"]))
    assert detached["result"] is None and cancelled["state"] == "JOB_STATE_CANCELLED"
    assert cancelled["cancel_reason"] == "shape test"
    # other commands write int64 fields as integers too
    assert isinstance(as_json(lc("datasets", "show", "pol", "--json"))["row_count"], int)
    assert isinstance(as_json(lc("package", "list", "--json"))["packages"][0]["size_bytes"], int)
    assert isinstance(as_json(lc("datasets", "validate", "pol", "--json"))["rows_checked"], int)


def test_wait_exit_status_cancel_reason_and_label_filter(lc: Run, package_hash: str) -> None:
    labels = ["--label", "team=pricing", "--label", "run=slow"]
    slow = ok(lc("submit", "--package", package_hash, "--dataset", "long", "--scenarios", "1000", "--chunk-blocks",
                 "1", *labels, "--detach")).strip()  # fmt: skip
    quick = ok(lc("submit", "--package", package_hash, "--dataset", "pol", "--scenarios", "5", "--label",
                  "team=pricing", "--detach")).strip()  # fmt: skip
    assert ok(lc("jobs", "cancel", slow, "--reason", "wrong dataset")) == f"{slow}: cancelled\n"
    waited = lc("jobs", "wait", slow)
    assert waited.returncode == 3 and waited.stdout == f"{slow}: cancelled: wrong dataset\n", waited
    assert "reason    wrong dataset" in ok(lc("jobs", "get", slow))
    assert lc("jobs", "wait", quick).returncode == 0
    rows = ok(lc("jobs", "list", "--label", "team=pricing")).splitlines()
    assert rows[0].split() == list(JOB_HEADER)
    assert [r.split()[0] for r in rows[1:]] == [quick, slow]
    assert "reason: wrong dataset" in rows[2]
    assert [r.split()[0] for r in ok(lc("jobs", "list", *labels)).splitlines()[1:]] == [slow]
    assert ok(lc("jobs", "list", "--label", "team=nobody")).splitlines()[1:] == []


def test_run_local_with_a_package_and_a_dataset_equals_the_mesh(
    lc: Run, mesh: InProcessSmallMesh, package_hash: str, tmp_path: Path
) -> None:
    job = as_json(lc("submit", "--package", package_hash, "--dataset", "pol", "--scenarios", "30", "--json"))
    local = lc("run", "--local", "--package", str(mesh.model_dir), "--dataset", str(mesh.root / "pol.csv"),
               "--scenarios", "30", "--threads", "1", "--data-dir", str(tmp_path))  # fmt: skip
    assert hash_line(ok(local)) == job["result"]["result_hash"]
    alone = one_line_error(lc("run", "--local", "--package", str(mesh.model_dir)))
    assert "--package and --dataset go together" in alone


def test_validate_a_local_file_by_path_and_an_invalid_upload_is_refused_at_once(
    lc: Run, mesh: InProcessSmallMesh, tmp_path: Path
) -> None:
    good = mesh.root / "pol.csv"
    assert "valid" in ok(lc("datasets", "validate", str(good)))  # a positional FILE, no service needed
    semicolons = tmp_path / "semi.csv"
    semicolons.write_text(good.read_text().replace(",", ";"))
    checked = lc("datasets", "validate", str(semicolons))
    assert checked.returncode == 1 and "hint: the header looks separated by semicolons" in checked.stderr
    refused = one_line_error(lc("datasets", "upload", str(semicolons)))
    assert "not uploaded" in refused and "semicolons" in refused
    rows = list(csv.reader(good.read_text().splitlines()))
    rows[5][rows[0].index("age_at_entry")] = "200"  # data row 4
    bad = tmp_path / "bad.csv"
    with bad.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    upload = lc("datasets", "upload", str(bad))
    assert upload.returncode == 1 and upload.stdout == ""
    assert "row 4: [range] age_at_entry" in upload.stderr and "not uploaded" in upload.stderr.splitlines()[-1]
    by_package = lc("datasets", "upload", str(bad), "--package", str(mesh.model_dir))
    assert by_package.returncode == 1 and "of the declaration of --package" in by_package.stderr
    listed = [d["dataset_id"] for d in as_json(lc("datasets", "list", "--json"))["datasets"]]
    assert "semi" not in listed and "bad" not in listed  # nothing was sent
    forced = as_json(lc("datasets", "upload", str(bad), "--no-validate", "--json"))
    assert forced["dataset_id"] == "bad"
    ok(lc("datasets", "delete", "bad"))
