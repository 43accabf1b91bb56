"""`livecalc submit --scenarios N` keeps the package's configured seed (issue 19, item 10).

Before the fix `--scenarios` without `--seed` sent seed 0 (and a spec with a seed but no
volatility got the generator's defaults), so the job valued other scenarios than the package
configures. A JobSpec's scenario seed is now optional like the other parameters, and the gateway
takes each one the spec leaves unset from the package's config: only what the user gives is
replaced, whether the package is given as a directory, a file or a hash.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.valuation.blocks import BLOCK_SIZE
from tests.client.clitools import livecalc_in_process
from tests.engine.mesh import datasets_dir, policies_csv, stochastic_package
from tests.gateway.jobmesh import get_job
from tests.inprocess import threaded_mesh

pytestmark = pytest.mark.timeout(180)

SEED = 987_654_321
SIGMA = 0.025


@dataclass
class Mesh:
    gateway: str
    model_dir: Path


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """Data, engine and gateway in this process (tests.inprocess: the seed is the CLI's and the
    gateway's business, not a process's); a package whose config sets its own seed and volatility."""
    tmp = tmp_path_factory.mktemp("seed")
    root = datasets_dir(tmp)
    policies_csv(root / "pol.csv", 2 * BLOCK_SIZE)
    model_dir = tmp / "model"
    stochastic_package(model_dir)
    config_path = model_dir / "livecalc.config.json"
    config = json.loads(config_path.read_text())
    config["scenarios"].update(seed=SEED, sigma=SIGMA)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    with threaded_mesh(tmp, datasets=root) as mesh:
        yield Mesh(mesh.gateway, model_dir)


def submit(mesh: Mesh, *args: str) -> dict[str, str]:
    """The job's id and its result document (the job document's `result`)."""
    done = livecalc_in_process("submit", "--dataset", "pol", "--json", "--address", mesh.gateway, *args)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    doc: dict[str, str] = job["result"]
    assert doc["job_id"] == job["job_id"]
    return doc


def test_scenarios_without_seed_keep_the_packages_seed(mesh: Mesh) -> None:
    doc = submit(mesh, "--package", str(mesh.model_dir), "--scenarios", "5")
    recorded = get_job(mesh.gateway, doc["job_id"]).spec.scenarios
    assert recorded.count == 5 and recorded.seed == SEED and recorded.volatility == pytest.approx(SIGMA)

    explicit = submit(mesh, "--package", str(mesh.model_dir), "--scenarios", "5", "--seed", str(SEED))
    assert explicit["result_hash"] == doc["result_hash"]
    other = submit(mesh, "--package", str(mesh.model_dir), "--scenarios", "5", "--seed", "0")
    assert get_job(mesh.gateway, other["job_id"]).spec.scenarios.seed == 0
    assert other["result_hash"] != doc["result_hash"]


def test_a_package_by_hash_keeps_its_configured_scenarios_too(mesh: Mesh) -> None:
    by_dir = submit(mesh, "--package", str(mesh.model_dir), "--scenarios", "5")
    package_hash = get_job(mesh.gateway, by_dir["job_id"]).spec.package_hash
    by_hash = submit(mesh, "--package", package_hash, "--scenarios", "5")
    recorded = get_job(mesh.gateway, by_hash["job_id"]).spec.scenarios
    assert recorded.seed == SEED and recorded.volatility == pytest.approx(SIGMA)
    assert by_hash["result_hash"] == by_dir["result_hash"]
    # a seed alone replaces the seed only: the package's volatility stays (it was 0.01 before)
    doc = submit(mesh, "--package", package_hash, "--seed", "3")
    recorded = get_job(mesh.gateway, doc["job_id"]).spec.scenarios
    assert recorded.seed == 3 and recorded.volatility == pytest.approx(SIGMA)
