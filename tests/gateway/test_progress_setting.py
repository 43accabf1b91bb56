"""`--progress-seconds` / LIVECALC_PROGRESS_SECONDS: how far apart a running job's progress events
are, resolved flag → environment → default, and refused unless positive."""

from __future__ import annotations

import argparse

import pytest

from services.common.errors import InvalidArgument
from services.gateway.config import DEFAULT_PROGRESS_SECONDS
from services.gateway.server import resolve_jobs_config


def resolve(flag: float | None, env: dict[str, str]) -> float:
    return resolve_jobs_config(argparse.Namespace(progress_seconds=flag), env).jobs.progress_seconds


def test_progress_seconds_from_flag_then_environment_then_default() -> None:
    assert resolve(None, {}) == DEFAULT_PROGRESS_SECONDS == 0.25
    assert resolve(None, {"LIVECALC_PROGRESS_SECONDS": "0.5"}) == 0.5
    assert resolve(0.01, {"LIVECALC_PROGRESS_SECONDS": "0.5"}) == 0.01


@pytest.mark.parametrize("bad", ["x", "0", "-1"])
def test_progress_seconds_must_be_a_positive_number(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="progress seconds"):
        resolve(None, {"LIVECALC_PROGRESS_SECONDS": bad})
