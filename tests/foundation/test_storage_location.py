"""Storage settings: a root directory, or an Azure container (both settings or neither), resolved
and opened the same way for every service that keeps objects."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from services.common.errors import InvalidArgument
from services.common.settings import Setting
from services.common.storage.local import UPLOAD_PREFIX, LocalStorage
from services.common.storage.location import StorageLocation, StorageSettings

SETTINGS = StorageSettings(
    Setting("LIVECALC_TEST_ROOT", str, None, flag="--root", help="root"),
    Setting("LIVECALC_TEST_AZURE_CONNECTION_STRING", str, None, flag="--azure-connection-string", help="azure"),
    Setting("LIVECALC_TEST_AZURE_CONTAINER", str, None, flag="--azure-container", help="container"),
)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    SETTINGS.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_root_is_the_flag_then_the_variable_then_the_default(tmp_path: Path) -> None:
    default = tmp_path / "default"
    assert SETTINGS.resolve(_args(), {}, default) == StorageLocation(default)
    env = {"LIVECALC_TEST_ROOT": str(tmp_path / "env")}
    assert SETTINGS.resolve(_args(), env, default).root == tmp_path / "env"
    assert SETTINGS.resolve(_args("--root", str(tmp_path / "flag")), env, default).root == tmp_path / "flag"
    assert SETTINGS.resolve(_args(), {}, default).where == str(default)


def test_azure_needs_both_settings_and_a_valid_container_name(tmp_path: Path) -> None:
    env = {"LIVECALC_TEST_AZURE_CONNECTION_STRING": "secret", "LIVECALC_TEST_AZURE_CONTAINER": "datasets"}
    location = SETTINGS.resolve(_args(), env, tmp_path)
    assert location.azure is not None and location.azure.connection_string == "secret"
    assert location.where == "datasets"
    assert "secret" not in repr(location)
    with pytest.raises(InvalidArgument, match="both a connection string and a container"):
        SETTINGS.resolve(_args("--azure-container", "datasets"), {}, tmp_path)
    with pytest.raises(InvalidArgument, match="3 to 63 characters"):
        SETTINGS.resolve(_args("--azure-connection-string", "x", "--azure-container", "ab"), {}, tmp_path)


@pytest.mark.anyio
async def test_opening_a_local_root_removes_uploads_nobody_writes(tmp_path: Path) -> None:
    stale = tmp_path / f"{UPLOAD_PREFIX}dead-writer-a.csv"
    stale.write_bytes(b"half")
    storage = await StorageLocation(tmp_path).open()
    try:
        assert isinstance(storage, LocalStorage) and storage.kind == "local"
        assert not stale.exists()
    finally:
        await storage.close()
