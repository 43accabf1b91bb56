"""`livecalc submit` and `livecalc jobs …` against the in-process mesh (tests.inprocess), each
command through livecalc's `main` in this process: --json is one document, errors are one line
with exit code 1, `jobs get --out` writes the results JSON, `jobs plot` a PNG; and Ctrl-C
(SIGINT) to a `livecalc jobs watch` process detaches — the job runs on and can be re-attached
to the end."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import pytest

from livecalc.gateway.v1 import job_pb2
from services.valuation.statistics import result_hash
from tests.client.clitools import LIVECALC, livecalc_in_process, png_size
from tests.client.conftest import InProcessSmallMesh
from tests.engine.mesh import SEED
from tests.gateway.jobmesh import get_job
from tests.support import ROOT

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def test_submit_get_list_plot_and_errors(inprocess_small_mesh: InProcessSmallMesh) -> None:
    gw = ["--address", inprocess_small_mesh.gateway]
    done = livecalc_in_process(
        "submit", "--package", str(inprocess_small_mesh.model_dir), "--dataset", "pol", "--scenarios", "30",
        "--seed", str(SEED), "--label", "who=cli-test", "--json", *gw,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)  # one document, nothing else on stdout: the job, its results document in it
    assert job["state"] == "JOB_STATE_SUCCEEDED" and job["spec"]["labels"] == {"who": "cli-test"}
    doc = job["result"]
    (primary,) = [o for o in doc["outputs"] if o["primary"]]
    assert doc["primary_output"] == primary["name"] == "net_cf"
    assert doc["statistics"]["scenario_count"] == 30 and doc["result_hash"] == result_hash(primary["values"])
    assert list(doc["statistics"]["output_means"]) == [o["name"] for o in doc["outputs"]]
    job_id = doc["job_id"]

    out = inprocess_small_mesh.tmp / "results.json"
    got = livecalc_in_process("jobs", "get", job_id, "--out", str(out), *gw)
    assert got.returncode == 0 and "succeeded" in got.stdout and "result hash" in got.stdout
    written = json.loads(out.read_text())
    assert written["result_hash"] == doc["result_hash"] and written["outputs"] == doc["outputs"]
    assert all(np.array(o["values"]).size == 30 for o in written["outputs"])
    assert "mean net_cf" in got.stdout and "mean premiums" in got.stdout

    listed = json.loads(livecalc_in_process("jobs", "list", "--json", "--state", "succeeded", *gw).stdout)
    assert job_id in [j["job_id"] for j in listed["jobs"]]
    plain = livecalc_in_process("jobs", "list", *gw).stdout
    assert job_id in plain and "succeeded" in plain

    png = inprocess_small_mesh.tmp / "plot.png"
    assert livecalc_in_process("jobs", "plot", job_id, "--out", str(png), *gw).returncode == 0
    assert png_size(png) == (1200, 700)

    missing = livecalc_in_process("jobs", "get", "no-such-job", *gw)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.count("\n") == 1 and missing.stderr.startswith("livecalc: error: ")
    bad = livecalc_in_process("submit", "--package", "0" * 64, "--dataset", "pol", *gw)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_ctrl_c_during_watch_detaches_and_the_job_runs_on(inprocess_small_mesh: InProcessSmallMesh) -> None:
    gw = ["--address", inprocess_small_mesh.gateway]
    archive = inprocess_small_mesh.tmp / "pkg.zip"
    archive.write_bytes(inprocess_small_mesh.archive)
    submitted = livecalc_in_process(
        "submit", "--package", str(archive), "--dataset", "long", "--scenarios", "1000", "--seed", "5",
        "--chunk-blocks", "1", "--detach", "--json", *gw,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]

    watcher = subprocess.Popen(
        [LIVECALC, "jobs", "watch", job_id, *gw], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert watcher.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # plain progress lines: stdout is not a terminal
            line = watcher.stdout.readline()
            if "policies)" in line:
                break
        else:
            pytest.fail("no progress line")
        watcher.send_signal(signal.SIGINT)
        _, err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 130
    assert f"livecalc jobs watch {job_id}" in err and f"livecalc jobs cancel {job_id}" in err
    assert "Traceback" not in err
    job = get_job(inprocess_small_mesh.gateway, job_id)
    assert job.state in (job_pb2.JOB_STATE_RUNNING, job_pb2.JOB_STATE_SUCCEEDED), job.state  # not cancelled

    again = livecalc_in_process("jobs", "watch", job_id, "--json", *gw)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["result"]["statistics"]["scenario_count"] == 1000
