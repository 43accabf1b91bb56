"""The bench's inputs: the reference packages, their upload, the scenario set, a dataset's version."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import grpc

from livecalc.gateway.v1 import package_service_pb2, package_service_pb2_grpc
from services.bench.mesh.config import DYN_LAPSE_BETA
from services.valuation.scenarios import ScenarioParams

UPLOAD_CHUNK: Final = 1 << 20


def build_package(dest: Path, model: str = "term_life") -> bytes:
    """The reference package of ``model`` as archive bytes: term_life with dynamic lapse on
    (β = 25), savings as shipped."""
    from services.valuation.packages.package import build_directory  # noqa: PLC0415
    from services.valuation.packages.reference import init_directory  # noqa: PLC0415

    init_directory(dest, model)
    if model == "term_life":
        options = dest / "assumptions" / "options.json"
        data = json.loads(options.read_text()) if options.exists() else {}
        data["dynamic_lapse"] = {**data.get("dynamic_lapse", {}), "beta": DYN_LAPSE_BETA}
        options.write_text(json.dumps(data, indent=2) + "\n")
    archive, _ = build_directory(dest, source_date_epoch=0)
    return archive


def upload(address: str, archive: bytes) -> str:
    def requests() -> Iterator[package_service_pb2.UploadPackageRequest]:
        header = package_service_pb2.PackageUploadHeader(
            size_bytes=len(archive), sha256=hashlib.sha256(archive).hexdigest()
        )
        yield package_service_pb2.UploadPackageRequest(header=header)
        for i in range(0, len(archive), UPLOAD_CHUNK):
            yield package_service_pb2.UploadPackageRequest(chunk=archive[i : i + UPLOAD_CHUNK])

    with grpc.insecure_channel(address) as channel:
        reply = package_service_pb2_grpc.PackageServiceStub(channel).UploadPackage(requests(), timeout=120)
    return str(reply.package.package_hash)


def scenarios_of(config: dict[str, Any], count: int) -> ScenarioParams:
    """The package's configured scenario set with the bench's count (the same for every run)."""
    sc = dict(config.get("scenarios") or {})
    defaults = ScenarioParams(count=count)
    return ScenarioParams(
        count=count,
        seed=int(sc.get("seed", defaults.seed)),
        a=float(sc.get("a", defaults.a)),
        sigma=float(sc.get("sigma", defaults.sigma)),
        include_base=bool(sc.get("include_base", defaults.include_base)),
    )


def dataset_version(data: str, dataset_id: str) -> str:
    from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc  # noqa: PLC0415

    with grpc.insecure_channel(data) as channel:
        got = data_service_pb2_grpc.DataServiceStub(channel).GetDataset(
            data_service_pb2.GetDatasetRequest(dataset_id=dataset_id), timeout=30
        )
    return str(got.dataset.version)
