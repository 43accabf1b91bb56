"""Bearer JWTs against a real `livecalc serve data` process: which tokens get in, which roles
may do what, and the audit line each mutating RPC and each denial leaves."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from services.data.generate import generate
from tests.data.test_service_backends import requests_for
from tests.security import keys
from tests.support import ServiceProcess, start_service

Code = grpc.StatusCode


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("auth")
    rsa_a, ec_e, rsa_other = keys.rsa_key(), keys.ec_key(), keys.rsa_key()
    jwks = tmp / "jwks.json"
    keys.write_jwks(jwks, {"a1": rsa_a, "e1": ec_e})
    secret = tmp / "secret"
    secret.write_bytes(keys.HS_SECRET)
    audit = tmp / "audit.log"
    service = start_service(
        "data",
        tmp,
        extra=[
            "--root",
            str(tmp / "datasets"),
            "--auth-jwks",
            str(jwks),
            "--auth-issuer",
            keys.ISSUER,
            "--auth-hs256-secret-file",
            str(secret),
            "--auth-jwks-refresh",
            "0",
            "--audit-log",
            str(audit),
        ],
    )
    try:
        yield {
            "service": service,
            "rsa": rsa_a,
            "ec": ec_e,
            "other": rsa_other,
            "jwks": jwks,
            "audit": audit,
            "tmp": tmp,
        }
    finally:
        service.kill()


def _stub(service: ServiceProcess) -> data_service_pb2_grpc.DataServiceStub:
    return data_service_pb2_grpc.DataServiceStub(grpc.insecure_channel(service.address))


def _metadata(token: str | None, request_id: str | None = None) -> list[tuple[str, str]]:
    md = [("authorization", token if token.startswith(("Bearer", "Basic")) else f"Bearer {token}")] if token else []
    return md + ([("x-request-id", request_id)] if request_id else [])


def _code(fn: Callable[[], Any]) -> tuple[Code, str]:
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return Code.OK, ""


def _list(world: dict[str, Any], token: str | None) -> tuple[Code, str]:
    stub = _stub(world["service"])
    request = data_service_pb2.ListDatasetsRequest()
    return _code(lambda: stub.ListDatasets(request, metadata=_metadata(token), timeout=10))


TOKENS: dict[str, tuple[Callable[[dict[str, Any]], str | None], Code]] = {
    "none": (lambda w: None, Code.UNAUTHENTICATED),
    "garbage": (lambda w: "not-a-jwt", Code.UNAUTHENTICATED),
    "basic scheme": (lambda w: "Basic YWxpY2U6cHc=", Code.UNAUTHENTICATED),
    "valid RS256": (lambda w: keys.sign(w["rsa"], "a1", "RS256"), Code.OK),
    "valid ES256": (lambda w: keys.sign(w["ec"], "e1", "ES256"), Code.OK),
    "valid HS256": (lambda w: keys.sign(keys.HS_SECRET, None, "HS256"), Code.OK),
    "expired": (lambda w: keys.sign(w["rsa"], "a1", "RS256", exp=int(time.time()) - 120), Code.UNAUTHENTICATED),
    "expired within leeway": (lambda w: keys.sign(w["rsa"], "a1", "RS256", exp=int(time.time()) - 5), Code.OK),
    "not yet valid": (lambda w: keys.sign(w["rsa"], "a1", "RS256", nbf=int(time.time()) + 300), Code.UNAUTHENTICATED),
    "no exp": (lambda w: keys.sign(w["rsa"], "a1", "RS256", exp=None), Code.UNAUTHENTICATED),
    "wrong issuer": (lambda w: keys.sign(w["rsa"], "a1", "RS256", iss="https://evil.test/"), Code.UNAUTHENTICATED),
    "wrong audience": (lambda w: keys.sign(w["rsa"], "a1", "RS256", aud="someone-else"), Code.UNAUTHENTICATED),
    "no tenant": (lambda w: keys.sign(w["rsa"], "a1", "RS256", tenant=None), Code.UNAUTHENTICATED),
    "wrong key": (lambda w: keys.sign(w["other"], "a1", "RS256"), Code.UNAUTHENTICATED),
    "wrong HS256 secret": (lambda w: keys.sign(b"x" * 40, None, "HS256"), Code.UNAUTHENTICATED),
    "alg none": (lambda w: keys.unsigned("a1"), Code.UNAUTHENTICATED),
    "HS/RS confusion": (lambda w: keys.hs_with_public_key(w["rsa"], "a1"), Code.UNAUTHENTICATED),
    "RS256 on an EC key": (lambda w: keys.sign(w["rsa"], "e1", "RS256"), Code.UNAUTHENTICATED),
    "unknown kid": (lambda w: keys.sign(w["other"], "zz", "RS256"), Code.UNAUTHENTICATED),
}


@pytest.mark.parametrize("case", sorted(TOKENS))
def test_token_table(world: dict[str, Any], case: str) -> None:
    make, expected = TOKENS[case]
    code, details = _list(world, make(world))
    assert code == expected, (case, details)
    if expected == Code.UNAUTHENTICATED:
        # The reason names no claim, key or time: nothing an attacker can tune against.
        assert details in {
            "invalid bearer token",
            "this service needs a bearer token (authorization metadata)",
            "the authorization metadata must be 'Bearer <token>'",
        }, details


def test_rotated_key_is_picked_up_by_kid(world: dict[str, Any]) -> None:
    rotated = keys.rsa_key()
    token = keys.sign(rotated, "r2", "RS256")
    assert _list(world, token)[0] == Code.UNAUTHENTICATED
    keys.write_jwks(world["jwks"], {"a1": world["rsa"], "e1": world["ec"], "r2": rotated})
    assert _list(world, token)[0] == Code.OK
    assert _list(world, keys.sign(world["rsa"], "a1", "RS256"))[0] == Code.OK


def test_health_and_reflection_need_no_token(world: dict[str, Any]) -> None:
    channel = grpc.insecure_channel(world["service"].address)
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert "livecalc.data.v1.DataService" in names


def _audit_lines(world: dict[str, Any], request_id: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in world["audit"].read_text().splitlines()]
    return [line for line in lines if line["request_id"] == request_id]


def _upload(world: dict[str, Any], token: str, dataset_id: str, request_id: str) -> tuple[Code, str]:
    path = world["tmp"] / f"{dataset_id}.csv"
    if not path.exists():
        generate(path, 50, 7)
    requests = requests_for(path.read_bytes(), dataset_id, "csv")
    stub = _stub(world["service"])
    return _code(lambda: stub.UploadDataset(iter(requests), metadata=_metadata(token, request_id), timeout=30))


def _delete(world: dict[str, Any], token: str, dataset_id: str, request_id: str) -> tuple[Code, str]:
    stub = _stub(world["service"])
    request = data_service_pb2.DeleteDatasetRequest(dataset_id=dataset_id)
    return _code(lambda: stub.DeleteDataset(request, metadata=_metadata(token, request_id), timeout=10))


def _token(world: dict[str, Any], *roles: str, sub: str = "alice") -> str:
    return keys.sign(world["rsa"], "a1", "RS256", roles=list(roles), sub=sub)


def test_roles_and_the_audit_line_of_each_mutating_rpc(world: dict[str, Any]) -> None:
    reader, uploader, admin = _token(world, "read"), _token(world, "upload", sub="bob"), _token(world, "admin")
    rid = lambda: uuid.uuid4().hex  # noqa: E731

    # A reader may read, not upload or delete: PERMISSION_DENIED, and each denial is audited.
    assert _list(world, reader)[0] == Code.OK
    r = rid()
    assert _upload(world, reader, "pol", r)[0] == Code.PERMISSION_DENIED
    (line,) = _audit_lines(world, r)
    assert (line["subject"], line["tenant"], line["action"], line["outcome"]) == (
        "alice",
        "acme",
        "dataset.upload",
        "permission_denied",
    )
    r = rid()
    assert _delete(world, uploader, "pol", r)[0] == Code.PERMISSION_DENIED
    assert [x["outcome"] for x in _audit_lines(world, r)] == ["permission_denied"]

    # Upload, then delete, with the roles for them: one line each, naming the object.
    r = rid()
    assert _upload(world, uploader, "pol", r) == (Code.OK, "")
    (line,) = _audit_lines(world, r)
    assert (line["subject"], line["action"], line["object"], line["outcome"]) == ("bob", "dataset.upload", "pol", "ok")
    assert line["time"].endswith("Z")
    r = rid()
    assert _upload(world, uploader, "pol", r)[0] == Code.ALREADY_EXISTS  # a failed mutation is audited too
    assert [(x["object"], x["outcome"]) for x in _audit_lines(world, r)] == [("pol", "already_exists")]
    r = rid()
    assert _delete(world, admin, "pol", r) == (Code.OK, "")
    assert [(x["action"], x["object"], x["outcome"]) for x in _audit_lines(world, r)] == [
        ("dataset.delete", "pol", "ok")
    ]

    # An unauthenticated mutation is a denial with no subject; reads leave no line.
    r = rid()
    assert _delete(world, "garbage", "pol", r)[0] == Code.UNAUTHENTICATED
    assert [(x["subject"], x["outcome"]) for x in _audit_lines(world, r)] == [("anonymous", "unauthenticated")]
    stub = _stub(world["service"])
    r = rid()
    stub.ListDatasets(data_service_pb2.ListDatasetsRequest(), metadata=_metadata(reader, r), timeout=10)
    assert _audit_lines(world, r) == []

    # Denials are counted by the metrics interceptor, audit events by their own counter.
    with urllib.request.urlopen(f"http://127.0.0.1:{world['service'].metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'livecalc_audit_events_total{action="dataset.delete",outcome="ok"} 1.0' in text
    assert 'livecalc_audit_events_total{action="dataset.upload",outcome="permission_denied"} 1.0' in text
    assert 'grpc_code="PermissionDenied",grpc_method="UploadDataset"' in text
    assert 'grpc_code="Unauthenticated",grpc_method="ListDatasets"' in text
