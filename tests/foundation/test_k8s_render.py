"""The rendered kustomizations run the mesh as DESIGN.md says ("Embedded default vs scale-out").

Each kustomization (base and overlays) is rendered by tests/foundation/kustomize.py, the
result validated strictly, and the deployment's properties checked against the services'
own flag parsing: probes name registered health services, every container is non-root with
a read-only root, the engines autoscale 3–10 on CPU and memory, NetworkPolicies select the
pods they mean to, the gateway's addresses resolve to Services that exist, every pod's
termination grace outlives the longest chunk, and every pod runs with auth from the mounted
`livecalc-auth` Secret (never LIVECALC_INSECURE), minting service tokens its peers accept.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from services.cli import build_parser
from services.common.auth.config import SecurityConfig, check_bind, resolve_security_config
from services.common.auth.roles import Role
from services.common.auth.service import service_credentials
from services.common.auth.tokens import TokenVerifier
from services.common.config import DEFAULT_PORTS, resolve_server_config
from services.common.errors import FailedPrecondition
from services.common.server import HEALTH_NAMES
from services.engine import server as engine_server
from services.gateway.server import resolve_jobs_config
from tests.foundation.kustomize import Doc, containers, pod_spec, render, selects
from tests.foundation.test_k8s import CUSTOM_KINDS
from tests.support import ROOT

KUSTOMIZATIONS = sorted(p.parent for p in (ROOT / "k8s").rglob("kustomization.yaml"))
SERVICES = sorted(DEFAULT_PORTS)
#: The Secret an operator creates with kubectl (k8s/base/kustomization.yaml), and its key.
AUTH_SECRET, AUTH_SECRET_KEY = "livecalc-auth", "hs256-secret"
SECRET_FILE_ENV = "LIVECALC_AUTH_HS256_SECRET_FILE"


class Rendered:
    def __init__(self, directory: Path) -> None:
        self.objects = render(directory)

    def get(self, kind: str, name: str) -> Doc:
        (obj,) = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        return obj

    def of_kind(self, kind: str) -> list[Doc]:
        return [o for o in self.objects if o["kind"] == kind]

    def deployment(self, service: str) -> Doc:
        return self.get("Deployment", f"livecalc-{service}")

    def container(self, service: str) -> Doc:
        (container,) = containers(self.deployment(service))
        return container

    def pods_selected(self, selector: Doc) -> list[str]:
        """Names of the Deployments whose pods a selector matches."""
        return [
            d["metadata"]["name"]
            for d in self.of_kind("Deployment")
            if selects(selector, d["spec"]["template"]["metadata"].get("labels", {}))
        ]

    def env(self, service: str) -> dict[str, str]:
        """The container's environment: the ConfigMaps it imports, then its own env."""
        container = self.container(service)
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env.update(self.get("ConfigMap", source["configMapRef"]["name"])["data"])
        env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
        return env

    def args(self, service: str) -> argparse.Namespace:
        """The container's args as `livecalc` itself parses them."""
        args = self.container(service)["args"]
        parsed = build_parser().parse_args(args)
        assert parsed.service == service
        return parsed

    def service_for(self, address: str) -> tuple[Doc, int]:
        """The Service an in-cluster HOST:PORT names, and the port."""
        host, _, port = address.rpartition(":")
        return self.get("Service", host.split(".")[0]), int(port)


@pytest.fixture(params=KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(ROOT)))
def mesh(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(request.param)


def _quantity(value: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for unit, factor in units.items():
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value)


def test_rendered_objects_validate_strictly(mesh: Rendered) -> None:
    custom = [o for o in mesh.objects if (o["apiVersion"], o["kind"]) in CUSTOM_KINDS]
    assert custom, "the Prometheus Operator monitor is part of the render"
    for obj in mesh.objects:
        if (obj["apiVersion"], obj["kind"]) not in CUSTOM_KINDS:
            kubernetes_validate.validate(obj, "1.37.0", strict=True)
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "livecalc-mesh" for o in mesh.objects)


@pytest.mark.parametrize("service", SERVICES)
def test_probes_name_registered_health_services(mesh: Rendered, service: str) -> None:
    container = mesh.container(service)
    grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    assert grpc_port == resolve_server_config(service, mesh.env(service)).port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": grpc_port, "service": probe.removesuffix("Probe")}
        assert container[probe]["grpc"]["service"] in HEALTH_NAMES


def test_every_container_is_non_root_with_a_read_only_root(mesh: Rendered) -> None:
    workloads = [o for o in mesh.objects if pod_spec(o) is not None]
    assert len(workloads) == 3
    for obj in workloads:
        spec = pod_spec(obj)
        assert spec is not None
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec.get("automountServiceAccountToken") is False
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in containers(obj):
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, container["name"]
            assert sc["allowPrivilegeEscalation"] is False, container["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], container["name"]
            assert sc.get("runAsUser", 10001) != 0 and sc.get("privileged") is not True
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
            assert "emptyDir" in mounts["/tmp"], f"{container['name']}: /tmp must be writable"
            assert container["image"] == "livecalc-mesh:0.1.0"


def test_engine_cache_dir_is_a_writable_volume(mesh: Rendered) -> None:
    cache = mesh.args("engine").cache_dir
    (container,) = containers(mesh.deployment("engine"))
    volumes = {v["name"]: v for v in pod_spec(mesh.deployment("engine"))["volumes"]}  # type: ignore[index]
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert cache in mounts and "emptyDir" in mounts[cache]


def test_engine_module_cache_key_is_on_its_own_writable_volume(mesh: Rendered) -> None:
    args = mesh.args("engine")
    (container,) = containers(mesh.deployment("engine"))
    volumes = {v["name"]: v for v in pod_spec(mesh.deployment("engine"))["volumes"]}  # type: ignore[index]
    by_path = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    state = str(args.state_dir)
    assert state in by_path and "emptyDir" in volumes[by_path[state]]
    assert by_path[state] != by_path[args.cache_dir], "the key must not live where the modules it signs do"


def test_engines_autoscale_three_to_ten_on_cpu_and_memory(mesh: Rendered) -> None:
    deployment = mesh.deployment("engine")
    (hpa,) = mesh.of_kind("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    utilization = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]}
    assert utilization == {"cpu": 70, "memory": 80}
    # The autoscaler owns the count: a replicas field would reset it on every apply.
    assert "replicas" not in deployment["spec"]
    resources = mesh.container("engine")["resources"]
    assert {k: _quantity(v) for k, v in resources["requests"].items()} == {"cpu": 1, "memory": 2 * 2**30}
    assert {k: _quantity(v) for k, v in resources["limits"].items()} == {"cpu": 2, "memory": 4 * 2**30}
    # WASM threads match the CPU limit (os.cpu_count() in a pod counts the node's cores).
    assert mesh.args("engine").threads == _quantity(resources["limits"]["cpu"])


def test_engine_disruption_budget(mesh: Rendered) -> None:
    (pdb,) = mesh.of_kind("PodDisruptionBudget")
    assert mesh.pods_selected(pdb["spec"]["selector"]) == ["livecalc-engine"]
    (hpa,) = mesh.of_kind("HorizontalPodAutoscaler")
    assert 0 < pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


def _ingress(mesh: Rendered, service: str) -> dict[int, list[Doc] | None]:
    """For the service's pods: port → the peers admitted (None: from anywhere)."""
    pods = [f"livecalc-{service}"]
    (policy,) = [p for p in mesh.of_kind("NetworkPolicy") if mesh.pods_selected(p["spec"]["podSelector"]) == pods]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    admitted: dict[int, list[Doc] | None] = {}
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            assert port["protocol"] == "TCP"
            admitted[port["port"]] = rule.get("from")
    return admitted


def _admits(peers: list[Doc] | None, mesh: Rendered) -> set[str]:
    assert peers is not None
    admitted: set[str] = set()
    for peer in peers:
        assert "ipBlock" not in peer and "namespaceSelector" not in peer
        admitted.update(mesh.pods_selected(peer["podSelector"]))
    return admitted


def _prometheus_only(peers: list[Doc] | None) -> bool:
    return peers == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    ]


def test_network_policies(mesh: Rendered) -> None:
    assert len(mesh.of_kind("NetworkPolicy")) == 3
    ports = {s: DEFAULT_PORTS[s] for s in SERVICES}
    engine, data, gateway = (_ingress(mesh, s) for s in ("engine", "data", "gateway"))
    assert set(engine) == set(ports["engine"])
    assert _admits(engine[ports["engine"][0]], mesh) == {"livecalc-gateway"}
    assert set(data) == set(ports["data"])
    assert _admits(data[ports["data"][0]], mesh) == {"livecalc-gateway", "livecalc-engine"}
    assert set(gateway) == set(ports["gateway"])
    assert gateway[ports["gateway"][0]] is None, "clients reach the gateway from anywhere"
    for service, admitted in (("engine", engine), ("data", data), ("gateway", gateway)):
        assert _prometheus_only(admitted[ports[service][1]]), f"{service}: metrics open to Prometheus"
        container_ports = {p["containerPort"] for p in mesh.container(service)["ports"]}
        assert set(admitted) == container_ports


def test_pod_monitor_scrapes_every_service(mesh: Rendered) -> None:
    (monitor,) = mesh.of_kind("PodMonitor")
    assert sorted(mesh.pods_selected(monitor["spec"]["selector"])) == [f"livecalc-{s}" for s in SERVICES]
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        for service in SERVICES:
            named = {p["name"]: p["containerPort"] for p in mesh.container(service)["ports"]}
            assert named[endpoint["port"]] == DEFAULT_PORTS[service][1]


def _service_selects(mesh: Rendered, address: str, service: str) -> Doc:
    svc, port = mesh.service_for(address)
    # A Service's selector is a plain label map, not a LabelSelector.
    assert mesh.pods_selected({"matchLabels": svc["spec"]["selector"]}) == [f"livecalc-{service}"], address
    (svc_port,) = [p for p in svc["spec"]["ports"] if p["port"] == port]
    named = {p["name"]: p["containerPort"] for p in mesh.container(service)["ports"]}
    assert named[svc_port["targetPort"]] == DEFAULT_PORTS[service][0]
    return svc


def test_gateway_reaches_headless_engines_data_and_advertises_itself(mesh: Rendered) -> None:
    config = resolve_jobs_config(mesh.args("gateway"), mesh.env("gateway"))
    assert not config.engines.addresses, "engines come from DNS, not a fixed list"
    engines = _service_selects(mesh, f"{config.engines.dns_name}:{config.engines.dns_port}", "engine")
    assert engines["spec"]["clusterIP"] == "None", "one channel per engine pod needs a headless Service"
    _service_selects(mesh, config.data_address, "data")
    _service_selects(mesh, config.advertise_address, "gateway")


def test_engines_reach_data_and_gateway(mesh: Rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_server, "usable_cache_dir", lambda configured: configured)
    config = engine_server.resolve_engine_config(mesh.args("engine"), mesh.env("engine"))
    _service_selects(mesh, config.data_address, "data")
    _service_selects(mesh, config.gateway_address, "gateway")


def test_gateway_store_is_on_a_claimed_volume(mesh: Rendered) -> None:
    deployment = mesh.deployment("gateway")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate", "one SQLite writer at a time"
    config = resolve_jobs_config(mesh.args("gateway"), mesh.env("gateway"))
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}  # type: ignore[index]
    mounts = {m["mountPath"]: volumes[m["name"]] for m in mesh.container("gateway")["volumeMounts"]}
    mount = next(path for path in mounts if config.jobs_db.is_relative_to(path))
    claim = mounts[mount]["persistentVolumeClaim"]["claimName"]
    assert mesh.get("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteOnce"]
    packages = Path(mesh.env("gateway")["LIVECALC_DATA_DIR"]) / "packages"
    assert packages.is_relative_to(mount), "packages live on the volume too"


@pytest.mark.parametrize("service", SERVICES)
def test_termination_outlives_the_longest_chunk(mesh: Rendered, service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_server, "usable_cache_dir", lambda configured: configured)
    engine = engine_server.resolve_engine_config(mesh.args("engine"), mesh.env("engine"))
    args: Any = mesh.args(service)
    server = resolve_server_config(service, mesh.env(service), grace_seconds=args.grace)
    assert engine.time_limit_seconds < 3600, "the chunk limit is set for the cluster, not the default"
    # A chunk that started just before SIGTERM finishes within the grace left after the drain,
    # and Kubernetes waits for the whole grace before it sends SIGKILL.
    assert server.grace_seconds - server.drain_seconds > engine.time_limit_seconds
    assert pod_spec(mesh.deployment(service))["terminationGracePeriodSeconds"] > server.grace_seconds  # type: ignore[index]


def test_nothing_runs_in_insecure_mode(mesh: Rendered) -> None:
    rendered = json.dumps(mesh.objects)
    assert "LIVECALC_INSECURE" not in rendered
    assert "--insecure" not in rendered


def test_no_secret_values_are_rendered(mesh: Rendered) -> None:
    """The auth secret is created with kubectl; a committed one would be a known key."""
    assert not mesh.of_kind("Secret")


@pytest.mark.parametrize("service", SERVICES)
def test_pods_mount_the_auth_secret_read_only(mesh: Rendered, service: str) -> None:
    container = mesh.container(service)
    secret_file = Path(mesh.env(service)[SECRET_FILE_ENV])
    (mount,) = [m for m in container["volumeMounts"] if secret_file.is_relative_to(m["mountPath"])]
    assert mount["readOnly"] is True
    assert "subPath" not in mount, "a subPath mount would not see the Secret change"
    spec = pod_spec(mesh.deployment(service))
    assert spec is not None
    source = {v["name"]: v for v in spec["volumes"]}[mount["name"]]["secret"]
    assert source["secretName"] == AUTH_SECRET
    assert source.get("optional") is not True, "without its Secret a pod must not start"
    # Owned by root, readable by the pod's fsGroup only: no write, execute or world bits; the
    # service (not root) reads it through its group, so the fsGroup must be its group.
    assert source["defaultMode"] & ~0o440 == 0, oct(source["defaultMode"])
    assert source["defaultMode"] & 0o040, "the service reads it through its group"
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]
    items = {item["path"]: item["key"] for item in source["items"]}
    assert items == {str(secret_file.relative_to(mount["mountPath"])): AUTH_SECRET_KEY}


def _pod_security(mesh: Rendered, service: str, secret: Path) -> SecurityConfig:
    """The service's security settings as it resolves them in its pod, the Secret at `secret`."""
    return resolve_security_config({**mesh.env(service), SECRET_FILE_ENV: str(secret)})


@pytest.mark.parametrize("service", SERVICES)
def test_pods_bind_all_interfaces_because_auth_is_on(mesh: Rendered, service: str, tmp_path: Path) -> None:
    env = mesh.env(service)
    secret = tmp_path / AUTH_SECRET_KEY
    secret.write_text(secrets.token_hex(32))  # as `openssl rand -hex 32` makes it
    security = _pod_security(mesh, service, secret)
    assert security.auth is not None and security.auth.hs256_secret == secret.read_bytes()
    assert not security.insecure
    check_bind(env["LIVECALC_HOST"], security)
    # Without the secret, protected mode refuses the bind: nothing else lets the pod listen.
    without = resolve_security_config({k: v for k, v in env.items() if k != SECRET_FILE_ENV})
    with pytest.raises(FailedPrecondition):
        check_bind(env["LIVECALC_HOST"], without)
    # The audit sink opens at start-up: stdout, and a file where a read-only root allows one.
    assert security.audit_stdout
    assert security.audit_path == Path(os.devnull), "the root filesystem is read-only"


def test_service_tokens_minted_in_one_pod_pass_in_the_others(mesh: Rendered, tmp_path: Path) -> None:
    """The gateway and engines mint admin tokens with the shared secret that their peers accept."""
    secret = tmp_path / AUTH_SECRET_KEY
    secret.write_text(secrets.token_hex(32) + "\n")
    for caller, callee in (("gateway", "engine"), ("gateway", "data"), ("engine", "data"), ("engine", "gateway")):
        env = {**mesh.env(caller), SECRET_FILE_ENV: str(secret)}
        credentials = service_credentials(caller, mesh.args(caller), env)
        assert credentials.enabled, caller
        ((key, value), *_) = credentials.metadata()
        assert key == "authorization" and value.startswith("Bearer ")
        auth = _pod_security(mesh, callee, secret).auth
        assert auth is not None
        principal = asyncio.run(TokenVerifier(auth).verify(value.removeprefix("Bearer ")))
        assert principal.subject == f"livecalc-{caller}"
        assert Role.ADMIN.value in principal.roles, f"{callee} must accept {caller}'s calls"
