"""Server configuration: flags over environment over defaults, validated."""

from __future__ import annotations

import argparse
from typing import cast

import pytest

from services.cli import build_parser
from services.common.config import (
    DEFAULT_PORTS,
    GRACE,
    HOST,
    ServerConfig,
    metrics_port_setting,
    port_setting,
    resolve_server_config,
)
from services.common.errors import InvalidArgument


def test_defaults_are_the_documented_ports() -> None:
    assert resolve_server_config("gateway", {}).port == 50051
    assert resolve_server_config("engine", {}).port == 50052
    data = resolve_server_config("data", {})
    assert (data.port, data.metrics_port, data.host) == (50053, 9466, "127.0.0.1")


def test_flag_beats_environment_beats_default() -> None:
    env = {"LIVECALC_ENGINE_PORT": "6000", "LIVECALC_ENGINE_METRICS_PORT": "7000", "LIVECALC_HOST": "0.0.0.0"}
    from_env = resolve_server_config("engine", env)
    assert (from_env.port, from_env.metrics_port, from_env.host) == (6000, 7000, "0.0.0.0")
    from_flag = resolve_server_config("engine", env, port=6001, metrics_port=-1, host="127.0.0.2")
    assert (from_flag.port, from_flag.metrics_port, from_flag.host) == (6001, None, "127.0.0.2")


def test_drain_never_exceeds_grace() -> None:
    config = resolve_server_config("data", {"LIVECALC_GRACE_SECONDS": "0.5"})
    assert config.drain_seconds == 0.5
    with pytest.raises(InvalidArgument, match="drain_seconds"):
        ServerConfig(service="data", grace_seconds=1, drain_seconds=2)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LIVECALC_DATA_PORT": "fifty"}, "LIVECALC_DATA_PORT must be an integer"),
        ({"LIVECALC_DATA_PORT": "70000"}, "port must be in 0..65535"),
        ({"LIVECALC_GRACE_SECONDS": "soon"}, "LIVECALC_GRACE_SECONDS must be a number"),
    ],
)
def test_bad_environment_is_a_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        resolve_server_config("data", env)


def test_unknown_service_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="unknown service"):
        ServerConfig(service="ledger")


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return cast(argparse.ArgumentParser, subparsers.choices[name])


@pytest.mark.parametrize("service", sorted(DEFAULT_PORTS))
def test_serve_flags_say_what_the_settings_declare(service: str) -> None:
    """`livecalc serve SERVICE --help` shows each server setting's declared help, variable and default."""
    parser = _subcommand(_subcommand(build_parser(), "serve"), service)
    helps = {a.option_strings[0]: a.help for a in parser._actions if a.option_strings}
    for setting in (HOST, GRACE, port_setting(service), metrics_port_setting(service)):
        assert setting.flag is not None
        assert helps[setting.flag] == setting.help_text
