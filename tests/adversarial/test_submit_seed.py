"""`livecalc submit --scenarios N` keeps the package's configured seed (issue 19, item 10).

Before the fix `--scenarios` without `--seed` sent seed 0 (and the default mean reversion and
volatility), so the job valued other scenarios than the package configures. Now only what the
user gives is replaced: the rest of the scenario set comes from the package's config. For a
package given by hash the CLI cannot read that config, so it asks for `--seed` instead of
guessing one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.valuation.blocks import BLOCK_SIZE
from tests.client.clitools import livecalc
from tests.engine.mesh import policies_csv, stochastic_package
from tests.gateway.jobmesh import get_job
from tests.meshes import Services

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SEED = 987_654_321
SIGMA = 0.025


@dataclass
class Mesh:
    gateway: str
    model_dir: Path


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """Data, engine and gateway processes; a package whose config sets its own seed and volatility."""
    tmp = tmp_path_factory.mktemp("seed")
    root = tmp / "datasets"
    root.mkdir()
    policies_csv(root / "pol.csv", 2 * BLOCK_SIZE)
    model_dir = tmp / "model"
    stochastic_package(model_dir)
    config_path = model_dir / "livecalc.config.json"
    config = json.loads(config_path.read_text())
    config["scenarios"].update(seed=SEED, sigma=SIGMA)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    with Services(tmp) as services:
        data = services.data(root)
        gateway = services.gateway(data, [services.engine(data, "e0")])
        yield Mesh(gateway.address, model_dir)


def submit(mesh: Mesh, *args: str) -> dict[str, str]:
    done = livecalc("submit", "--dataset", "pol", "--json", "--address", mesh.gateway, *args)
    assert done.returncode == 0, done.stderr
    doc: dict[str, str] = json.loads(done.stdout)
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


def test_a_package_by_hash_needs_a_seed_rather_than_a_guessed_one(mesh: Mesh) -> None:
    job = get_job(mesh.gateway, submit(mesh, "--package", str(mesh.model_dir), "--scenarios", "5")["job_id"])
    by_hash = ["--package", job.spec.package_hash, "--scenarios", "5"]
    refused = livecalc("submit", "--dataset", "pol", "--address", mesh.gateway, *by_hash)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "--seed" in refused.stderr, refused.stderr
    doc = submit(mesh, *by_hash, "--seed", "3")
    assert get_job(mesh.gateway, doc["job_id"]).spec.scenarios.seed == 3
