"""The v1 API contract: buf-lint clean, generated code fresh, conventions held."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from livecalc.data.v1 import data_service_pb2
from livecalc.engine.v1 import engine_service_pb2
from livecalc.gateway.v1 import job_service_pb2, package_service_pb2
from services.common.reflection import load_documented_files
from tests.support import ROOT

BUF = ROOT / "node_modules" / ".bin" / "buf"


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not BUF.exists(), reason="buf is installed by `make test` (npm)")
def test_buf_lint_clean() -> None:
    result = subprocess.run([str(BUF), "lint"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not BUF.exists(), reason="buf is installed by `make test` (npm)")
def test_buf_breaking_catches_a_deleted_field(tmp_path: Path) -> None:
    """The FILE rule set is live: an unchanged copy passes, a copy with a field removed fails."""

    def breaking(edit: bool) -> subprocess.CompletedProcess[str]:
        copy = tmp_path / ("edited" if edit else "same")
        shutil.copytree(ROOT / "protos", copy / "protos")
        shutil.copy(ROOT / "buf.yaml", copy / "buf.yaml")
        if edit:
            proto = copy / "protos/livecalc/data/v1/data_service.proto"
            text = proto.read_text()
            assert "  int64 n = 2;\n" in text
            proto.write_text(text.replace("  int64 n = 2;\n", ""))
        return subprocess.run(
            [str(BUF), "breaking", str(copy), "--against", str(ROOT)], capture_output=True, text=True, check=False
        )

    same = breaking(edit=False)
    assert same.returncode == 0, same.stdout + same.stderr
    edited = breaking(edit=True)
    assert edited.returncode != 0
    assert 'field "2" with name "n"' in edited.stdout + edited.stderr


SERVICES = [
    data_service_pb2.DESCRIPTOR.services_by_name["DataService"],
    engine_service_pb2.DESCRIPTOR.services_by_name["EngineService"],
    job_service_pb2.DESCRIPTOR.services_by_name["JobService"],
    package_service_pb2.DESCRIPTOR.services_by_name["PackageService"],
]


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.full_name)
def test_one_request_and_response_per_rpc(service: Any) -> None:
    for method in service.methods:
        assert method.input_type.name == f"{method.name}Request"
        assert method.output_type.name == f"{method.name}Response"


def test_every_livecalc_element_is_documented() -> None:
    """Source info travels with the descriptor set: every message and field has a comment."""
    documented = load_documented_files()
    own = {name: raw for name, raw in documented.items() if name.startswith("livecalc/")}
    assert len(own) >= 7
    for name, raw in own.items():
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        commented = {tuple(loc.path) for loc in proto.source_code_info.location if loc.leading_comments.strip()}
        for i, message in enumerate(proto.message_type):
            assert (4, i) in commented, f"{name}: message {message.name} has no comment"
            for j, field in enumerate(message.field):
                assert (4, i, 2, j) in commented, f"{name}: {message.name}.{field.name} has no comment"
        for enum in proto.enum_type:
            assert enum.value[0].name.endswith("_UNSPECIFIED") and enum.value[0].number == 0
