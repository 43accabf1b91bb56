"""Server configuration: flags over environment over defaults, validated."""

from __future__ import annotations

import pytest

from services.common.config import ServerConfig, resolve_server_config
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
