"""`livecalc serve data` with bad configuration: one clear line and exit code 1."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import VENV_BIN


def serve_data(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(VENV_BIN / "livecalc"), "serve", "data", "--port", "0", "--metrics-port", "-1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--azure-connection-string", "garbage", "--azure-container", "abc"), "Azure connection string is malformed"),
        (("--azure-connection-string", "x"), "needs both a connection string and a container"),
        (("--azure-connection-string", "x", "--azure-container", "ab"), "3 to 63 characters"),
    ],
)
def test_bad_azure_settings(args: tuple[str, ...], message: str) -> None:
    result = serve_data(*args)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("livecalc: error: ")
    assert message in result.stderr and "Traceback" not in result.stderr


def test_root_that_is_a_file(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = serve_data("--root", str(not_a_dir))
    assert result.returncode == 1
    assert f"dataset root {not_a_dir} is not a directory" in result.stderr
    assert "Traceback" not in result.stderr
