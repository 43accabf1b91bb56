"""The image's default command starts the mesh with auth, so its 0.0.0.0 bind is allowed.

The Dockerfile sets LIVECALC_HOST=0.0.0.0 (a container is reached from outside it), which
protected mode allows only with auth. Its default command is parsed here as `livecalc` parses
it, and the environment `livecalc up` gives each service is resolved as the services resolve
it: auth is on and every bind passes; without --auth-dev the same `up` refuses before starting
anything, in one line that says how.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from services.cli import build_parser
from services.common.auth.config import check_bind, resolve_security_config
from services.common.errors import FailedPrecondition
from services.common.up import check_listen, mesh_plan
from tests.support import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> dict[str, str]:
    """The Dockerfile's last instruction of each kind, continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            out[keyword.upper()] = rest.strip()
    return out


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in shlex.split(_instructions()["ENV"]):
        key, _, value = pair.partition("=")
        env[key] = value
    return env


def _plan_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, auth_dev: bool) -> dict[str, str]:
    """The environment `livecalc up` gives its services in the image (nothing else configured)."""
    for key in [k for k in os.environ if k.startswith("LIVECALC_")]:
        monkeypatch.delenv(key)
    for key, value in _image_env().items():
        monkeypatch.setenv(key, value)
    _, env = mesh_plan(tmp_path / ".livecalc", 1, 0, auth_dev=auth_dev)
    return env


def test_the_default_command_runs_the_mesh_with_auth(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    instructions = _instructions()
    # Kubernetes' Deployments pass `serve SERVICE …` as args: the entrypoint is livecalc itself.
    assert json.loads(instructions["ENTRYPOINT"]) == ["livecalc"]
    command = json.loads(instructions["CMD"])
    args = build_parser().parse_args(command)
    assert args.command == "up" and args.auth_dev is True
    env = _plan_env(monkeypatch, tmp_path, auth_dev=args.auth_dev)
    assert env["LIVECALC_HOST"] == "0.0.0.0"
    check_listen(env)
    security = resolve_security_config(env)
    assert security.auth is not None and not security.insecure
    check_bind(env["LIVECALC_HOST"], security)
    # The secret `livecalc auth dev-token` signs with, in the data dir a `docker exec` also sees.
    assert (tmp_path / ".livecalc" / "auth" / "dev-secret").stat().st_mode & 0o077 == 0


def test_without_auth_up_says_how_before_starting_anything(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = _plan_env(monkeypatch, tmp_path, auth_dev=False)
    with pytest.raises(FailedPrecondition) as refused:
        check_listen(env)
    assert "--auth-dev" in refused.value.message and "0.0.0.0" in refused.value.message
    assert "\n" not in refused.value.message


def test_the_guide_names_the_default_command() -> None:
    command = json.loads(_instructions()["CMD"])
    assert f"`livecalc {' '.join(command)}`" in (ROOT / "docs" / "deploy-kubernetes.md").read_text()
