"""Settings: one declaration per knob, resolved flag → environment → default, validated."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from services.common.errors import InvalidArgument
from services.common.settings import Setting, data_dir, parse_bool

THREADS: Setting[int | None] = Setting(
    "LIVECALC_TEST_THREADS", int, None, flag="--threads", help="worker threads", shown="cores"
)
ATTEMPTS = Setting(
    "LIVECALC_TEST_ATTEMPTS",
    int,
    4,
    flag="--attempts",
    help="tries",
    check=lambda n: n >= 1,
    rule="≥ 1",
    what="attempts",
)
LIMIT = Setting("LIVECALC_TEST_LIMIT", float, 3600.0, flag="--limit", help="seconds")
DEV = Setting("LIVECALC_TEST_DEV", parse_bool, False, flag="--dev", help="dev mode")


def _parser(*settings: Setting[object]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    for setting in settings:
        setting.add_argument(parser)
    return parser


def test_flag_beats_environment_beats_default() -> None:
    parser = _parser(THREADS, ATTEMPTS, LIMIT, DEV)  # type: ignore[arg-type]
    env = {"LIVECALC_TEST_THREADS": "3", "LIVECALC_TEST_LIMIT": "2.5", "LIVECALC_TEST_DEV": "yes"}
    plain = parser.parse_args([])
    assert (THREADS.read(plain, {}), ATTEMPTS.read(plain, {}), LIMIT.read(plain, {}), DEV.read(plain, {})) == (
        None,
        4,
        3600.0,
        False,
    )
    assert (THREADS.read(plain, env), LIMIT.read(plain, env), DEV.read(plain, env)) == (3, 2.5, True)
    flagged = parser.parse_args(["--threads", "0", "--limit", "1", "--dev"])
    assert (THREADS.read(flagged, env), LIMIT.read(flagged, env), DEV.read(flagged, {})) == (0, 1.0, True)


def test_empty_variable_and_missing_attribute_mean_not_given() -> None:
    assert ATTEMPTS.read(argparse.Namespace(), {"LIVECALC_TEST_ATTEMPTS": ""}) == 4
    assert ATTEMPTS.resolve({"LIVECALC_TEST_ATTEMPTS": "7"}) == 7


@pytest.mark.parametrize(
    ("setting", "text", "message"),
    [
        (ATTEMPTS, "four", "environment variable LIVECALC_TEST_ATTEMPTS must be an integer, got 'four'"),
        (LIMIT, "soon", "environment variable LIVECALC_TEST_LIMIT must be a number, got 'soon'"),
        (DEV, "maybe", "environment variable LIVECALC_TEST_DEV must be 1 or 0, got 'maybe'"),
        (ATTEMPTS, "0", "attempts must be ≥ 1, got 0"),
    ],
)
def test_bad_values_name_the_setting(setting: Setting[object], text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        setting.resolve({setting.env: text})


def test_checks_apply_to_flags_too() -> None:
    with pytest.raises(InvalidArgument, match="attempts must be ≥ 1, got 0"):
        ATTEMPTS.resolve({}, 0)


def test_help_names_variable_and_default() -> None:
    assert THREADS.help_text == "worker threads (env LIVECALC_TEST_THREADS; default cores)"
    assert LIMIT.help_text == "seconds (env LIVECALC_TEST_LIMIT; default 3600)"
    assert DEV.help_text == "dev mode (env LIVECALC_TEST_DEV=1)"
    assert "(env LIVECALC_TEST_ATTEMPTS; default 4)" in _parser(ATTEMPTS).format_help()  # type: ignore[arg-type]


def test_data_dir_is_flag_then_environment_then_dot_livecalc() -> None:
    assert data_dir({}) == Path(".livecalc")
    assert data_dir({"LIVECALC_DATA_DIR": ""}) == Path(".livecalc")
    assert data_dir({"LIVECALC_DATA_DIR": "/srv/lc"}) == Path("/srv/lc")
    assert data_dir({"LIVECALC_DATA_DIR": "/srv/lc"}, "/tmp/x") == Path("/tmp/x")


def test_a_flag_is_parsed_like_its_variable() -> None:
    def seconds(text: str) -> float:
        return float(text.removesuffix("s"))

    timeout = Setting(
        "LIVECALC_TEST_TIMEOUT", seconds, 1.0, flag="--timeout", help="t", check=lambda s: s > 0, rule="> 0"
    )
    parser = _parser(timeout)  # type: ignore[arg-type]
    assert timeout.read(parser.parse_args(["--timeout", "2.5s"]), {}) == 2.5
    assert timeout.read(parser.parse_args([]), {"LIVECALC_TEST_TIMEOUT": "3s"}) == 3.0
