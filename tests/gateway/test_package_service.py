"""PackageService on a gateway: round trip, refusals, pagination and grpcurl against its real servicer
on loopback in this process (tests.inprocess), Azurite against a gateway process given the
container by its flags."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from livecalc.gateway.v1 import package_service_pb2 as pb
from livecalc.gateway.v1 import package_service_pb2_grpc
from services.gateway.cli import upload_requests
from tests.client.clitools import livecalc_in_process
from tests.data.conftest import azurite  # noqa: F401  (the session fixture, shared)
from tests.gateway import archives
from tests.inprocess import threaded_mesh
from tests.support import VENV_BIN, start_service

Stub = package_service_pb2_grpc.PackageServiceStub


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The gateway's address and the directory its packages are stored in."""
    tmp = tmp_path_factory.mktemp("gateway")
    with threaded_mesh(tmp) as mesh:
        yield mesh.gateway, tmp / "gw" / "packages"


def download(stub: Stub, package_hash: str) -> bytes:
    parts: list[bytes] = []
    call = stub.DownloadPackage(pb.DownloadPackageRequest(package_hash=package_hash), timeout=30)
    try:
        for message in call:
            assert message.offset == sum(len(p) for p in parts)
            parts.append(message.chunk)
    finally:
        call.cancel()
    data = b"".join(parts)
    assert hashlib.sha256(data).hexdigest() == message.sha256 and len(data) == message.size_bytes
    return data


def livecalc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`livecalc ARGS…` in `cwd`, run in this process (tests.client.clitools)."""
    return livecalc_in_process(*args, cwd=cwd)


def test_init_build_validate_upload_download_round_trip(gateway: tuple[str, Path], tmp_path: Path) -> None:
    address, _ = gateway
    assert livecalc("package", "init", "model", cwd=tmp_path).returncode == 0
    for out in ("a.zip", "b.zip"):
        assert livecalc("package", "build", "model", "--out", out, cwd=tmp_path).returncode == 0
    archive = (tmp_path / "a.zip").read_bytes()
    assert archive == (tmp_path / "b.zip").read_bytes()
    checked = livecalc("package", "validate", "a.zip", "--json", cwd=tmp_path)
    assert checked.returncode == 0 and json.loads(checked.stdout)["valid"] is True
    up = livecalc("package", "upload", "a.zip", "--address", address, "--json", cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    record = json.loads(up.stdout)
    assert record["already_existed"] is False
    package_hash = record["package"]["package_hash"]
    again = livecalc("package", "upload", "a.zip", "--address", address, "--json", cwd=tmp_path)
    assert json.loads(again.stdout)["already_existed"] is True
    with grpc.insecure_channel(address) as channel:
        stub = Stub(channel)
        assert download(stub, package_hash) == archive
        got = stub.GetPackage(pb.GetPackageRequest(package_hash=package_hash), timeout=10).package
        assert got.archive_sha256 == hashlib.sha256(archive).hexdigest()
        assert [n.engine for n in got.pipeline] == ["wasm://esg", "wasm://term_life"]
        with pytest.raises(grpc.RpcError) as info:
            stub.GetPackage(pb.GetPackageRequest(package_hash="0" * 64), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    shown = livecalc("package", "show", package_hash, "--address", address, cwd=tmp_path)
    assert shown.returncode == 0 and "wasm://term_life" in shown.stdout
    listed = livecalc("package", "list", "--address", address, "--json", "--page-size", "1", cwd=tmp_path)
    assert package_hash in [p["package_hash"] for p in json.loads(listed.stdout)["packages"]]
    grpcurl = subprocess.run(
        [
            str(VENV_BIN / "grpcurl"),
            "-plaintext",
            "-d",
            json.dumps({"package_hash": package_hash}),
            address,
            "livecalc.gateway.v1.PackageService/GetPackage",
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert grpcurl.returncode == 0, grpcurl.stderr
    shown_json = json.loads(grpcurl.stdout)["package"]
    assert shown_json["name"] == "term-life-reference"
    assert shown_json["assets"][0]["type"] == "ASSET_TYPE_ASSUMPTION"


def _stored(root: Path, package_hash: str | None = None) -> list[str]:
    return sorted(p.name for p in root.glob("package-*") if package_hash is None or package_hash in p.name)


@pytest.mark.parametrize(("case", "archive", "names"), archives.cases(), ids=[c[0] for c in archives.cases()])
def test_hostile_upload_is_refused_and_nothing_stored(
    gateway: tuple[str, Path], case: str, archive: bytes, names: str
) -> None:
    address, root = gateway
    before = _stored(root)
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as info:
        Stub(channel).UploadPackage(upload_requests(archive), timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert names in (info.value.details() or ""), info.value.details()
    assert _stored(root) == before
    assert not [p for p in root.iterdir() if p.name.startswith(".upload-")]


def _requests(header: pb.PackageUploadHeader, chunks: list[bytes]) -> Iterator[pb.UploadPackageRequest]:
    yield pb.UploadPackageRequest(header=header)
    for chunk in chunks:
        yield pb.UploadPackageRequest(chunk=chunk)


@pytest.mark.parametrize(
    ("case", "cut", "sha", "names"),
    [
        ("truncated-upload", 1000, None, "truncated upload"),
        ("header-hash-mismatch", 0, "f" * 64, "header declared"),
    ],
)
def test_upload_stream_checks(gateway: tuple[str, Path], case: str, cut: int, sha: str | None, names: str) -> None:
    address, root = gateway
    archive = archives.reference_archive()
    header = pb.PackageUploadHeader(size_bytes=len(archive), sha256=sha or hashlib.sha256(archive).hexdigest())
    before = _stored(root)
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as info:
        Stub(channel).UploadPackage(_requests(header, [archive[: len(archive) - cut]]), timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert names in (info.value.details() or "")
    assert _stored(root) == before


def test_upload_and_download_on_azurite(azurite: str, tmp_path: Path) -> None:  # noqa: F811
    service = start_service(
        "gateway",
        tmp_path,
        extra=["--packages-azure-connection-string", azurite, "--packages-azure-container", "packages-test"],
    )
    try:
        archive = archives.reference_archive()
        with grpc.insecure_channel(service.address) as channel:
            stub = Stub(channel)
            reply = stub.UploadPackage(upload_requests(archive), timeout=60)
            assert not reply.already_existed
            assert stub.UploadPackage(upload_requests(archive), timeout=60).already_existed
            assert download(stub, reply.package.package_hash) == archive
            with pytest.raises(grpc.RpcError) as info:
                stub.UploadPackage(upload_requests(archives.cases()[1][1]), timeout=60)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            listed = stub.ListPackages(pb.ListPackagesRequest(), timeout=10)
            assert [p.package_hash for p in listed.packages] == [reply.package.package_hash]
    finally:
        service.terminate()
