"""The rendered kustomizations run the mesh as docs/architecture.md says ("11. Scale-out").

Every variant docs/deploy-kubernetes.md lists (`kubectl kustomize DIR`: the base and the
overlays; a kustomization it does not list fails here) is rendered by
tests/foundation/kustomize.py (and, where kubectl is installed, shown to render exactly as
`kubectl kustomize` does), the result validated strictly, and the deployment's properties
checked against the services' own flag parsing: the image is the variant's `images:` entry,
probes name registered health services, every container is non-root with a read-only root,
the engines autoscale 3–10 on CPU and memory, NetworkPolicies select the pods they mean to,
the gateway's addresses resolve to Services that exist, datasets and the job store are on
claimed volumes (or datasets in Azure Blob), the Ingress speaks gRPC with TLS to Services that
exist, every Secret a variant needs is one the guide says how to create, every pod's
termination grace outlives the longest chunk, and every pod runs with auth (never
LIVECALC_INSECURE): from the mounted `livecalc-auth` Secret, minting service tokens its peers
accept, or (components/auth-jwks) by an identity provider's JWKS, presenting its token from the
mounted `livecalc-service-token`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from livecalc.data.v1 import data_service_pb2
from livecalc.gateway.v1 import job_service_pb2, package_service_pb2
from services.cli import build_parser
from services.common.auth.config import SecurityConfig, check_bind, resolve_security_config
from services.common.auth.roles import Role
from services.common.auth.service import service_credentials
from services.common.auth.tokens import TokenVerifier
from services.common.config import DEFAULT_PORTS, resolve_server_config
from services.common.errors import FailedPrecondition
from services.common.server import HEALTH_NAMES
from services.data.server import resolve_data_config
from services.engine import server as engine_server
from services.gateway.server import resolve_jobs_config
from tests.foundation.kustomize import Doc, containers, is_component, kustomization, pod_spec, render, selects
from tests.foundation.test_k8s import CUSTOM_KINDS, check_custom_resource
from tests.security import keys
from tests.support import ROOT

GUIDE = ROOT / "docs" / "deploy-kubernetes.md"
KUSTOMIZATIONS = sorted(p.parent for p in (ROOT / "k8s").rglob("kustomization.yaml"))
#: What renders on its own (the base and the overlays); components render inside them.
VARIANTS = [p for p in KUSTOMIZATIONS if not is_component(p)]
COMPONENTS = [p for p in KUSTOMIZATIONS if is_component(p)]
SERVICES = sorted(DEFAULT_PORTS)
#: The Secret an operator creates with kubectl (k8s/base/kustomization.yaml), and its key.
AUTH_SECRET, AUTH_SECRET_KEY = "livecalc-auth", "hs256-secret"
SECRET_FILE_ENV = "LIVECALC_AUTH_HS256_SECRET_FILE"
#: With an identity provider (components/auth-jwks): its keys, and the Secret of the token that
#: the services which call others present.
JWKS_ENV, TOKEN_FILE_ENV = "LIVECALC_AUTH_JWKS", "LIVECALC_SERVICE_TOKEN_FILE"
SERVICE_TOKEN_SECRET, SERVICE_TOKEN_KEY = "livecalc-service-token", "token"
CALLERS = ("gateway", "engine")


class Rendered:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
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

    def secret_env(self, service: str) -> dict[str, tuple[str, str]]:
        """The container's variables set from a Secret: name → (Secret, key)."""
        env = self.container(service).get("env", [])
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
        return {name: (ref["name"], ref["key"]) for name, ref in refs.items()}

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


@pytest.fixture(params=VARIANTS, ids=lambda p: str(p.relative_to(ROOT)))
def mesh(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(request.param)


def _guide() -> str:
    return GUIDE.read_text()


def test_the_guide_lists_every_variant_and_component() -> None:
    """docs/deploy-kubernetes.md lists exactly the kustomizations there are: a new variant (or a
    component) that the guide does not list fails here, and so does one it lists that is gone."""
    text = _guide()
    documented = {ROOT / d for d in re.findall(r"kubectl kustomize (k8s/[\w./-]+)`", text)}
    assert documented == set(VARIANTS), "the guide's `kubectl kustomize DIR` variants are the kustomizations"
    components = {ROOT / d for d in re.findall(r"`(k8s/components/[\w-]+)`", text)}
    assert components == set(COMPONENTS)
    # Each component renders (and so is tested) inside at least one documented variant.
    included = {
        (variant / entry).resolve() for variant in VARIANTS for entry in kustomization(variant).get("components", [])
    }
    assert {c.resolve() for c in COMPONENTS} <= included


def _strip(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_renderer_renders_as_kubectl_does(mesh: Rendered) -> None:
    """The objects tests/foundation/kustomize.py renders are exactly those of `kubectl kustomize`."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(mesh.directory)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    theirs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out) if o}
    ours = {(o["kind"], o["metadata"]["name"]): _strip(o) for o in mesh.objects}
    assert sorted(ours) == sorted(theirs)
    for key, obj in ours.items():
        assert obj == theirs[key], key


def _quantity(value: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for unit, factor in units.items():
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value)


def test_rendered_objects_validate_strictly(mesh: Rendered) -> None:
    for obj in mesh.objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            check_custom_resource(obj)  # its CRD's schema is not bundled
        else:
            kubernetes_validate.validate(obj, "1.37.0", strict=True)
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "livecalc-mesh" for o in mesh.objects)
    namespaces = {o["metadata"].get("namespace") for o in mesh.objects}
    assert len(namespaces) == 1, "one namespace for the whole mesh (its Services are named without one)"


def _images(directory: Path) -> dict[str, str]:
    """Image name → the reference its variant's `images:` entries make of it (overlays win)."""
    spec = kustomization(directory)
    images: dict[str, str] = {}
    for entry in spec.get("resources", []):
        if (directory / entry).is_dir():
            images.update(_images(directory / entry))
    for entry in spec.get("components", []):
        images.update(_images(directory / entry))
    for image in spec.get("images", []):
        name, _, tag = images.get(image["name"], image["name"] + ":").rpartition(":")
        images[image["name"]] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    return images


def test_every_pod_runs_the_variants_image(mesh: Rendered) -> None:
    """The one image, as the variant's `images:` entry names it (example: your registry's)."""
    expected = _images(mesh.directory)["livecalc-mesh"]
    assert {c["image"] for obj in mesh.objects for c in containers(obj)} == {expected}
    name, _, tag = expected.rpartition(":")
    assert name.endswith("livecalc-mesh") and tag, expected
    if mesh.directory.name == "example":
        assert expected == "registry.example.com/livecalc-mesh:0.1.0"


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


#: The pods of ingress-nginx's own install, which the ingress component admits to the data service.
INGRESS_CONTROLLER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
}


def _ingress(mesh: Rendered, service: str) -> dict[int, list[list[Doc] | None]]:
    """For the service's pods: port → the peers of each rule admitting it (None: from anywhere),
    over every NetworkPolicy that selects them (policies add up)."""
    pods = [f"livecalc-{service}"]
    policies = [p for p in mesh.of_kind("NetworkPolicy") if mesh.pods_selected(p["spec"]["podSelector"]) == pods]
    assert policies, service
    admitted: dict[int, list[list[Doc] | None]] = {}
    for policy in policies:
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"]["ingress"]:
            for port in rule["ports"]:
                assert port["protocol"] == "TCP"
                admitted.setdefault(port["port"], []).append(rule.get("from"))
    return admitted


def _admits(peers: list[Doc] | None, mesh: Rendered) -> set[str]:
    assert peers is not None
    admitted: set[str] = set()
    for peer in peers:
        assert "ipBlock" not in peer and "namespaceSelector" not in peer
        admitted.update(mesh.pods_selected(peer["podSelector"]))
    return admitted


def _prometheus_only(rules: list[list[Doc] | None]) -> bool:
    return rules == [
        [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    ]


def _routes(mesh: Rendered) -> dict[str, Doc]:
    """Ingress path → its backend Service, over every Ingress of the variant."""
    return {
        path["path"]: mesh.get("Service", path["backend"]["service"]["name"])
        for ingress in mesh.of_kind("Ingress")
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }


def test_network_policies(mesh: Rendered) -> None:
    from_outside = any(svc["metadata"]["name"] == "livecalc-data" for svc in _routes(mesh).values())
    assert len(mesh.of_kind("NetworkPolicy")) == 3 + from_outside
    ports = {s: DEFAULT_PORTS[s] for s in SERVICES}
    engine, data, gateway = (_ingress(mesh, s) for s in ("engine", "data", "gateway"))
    assert set(engine) == set(ports["engine"])
    (engine_peers,) = engine[ports["engine"][0]]
    assert _admits(engine_peers, mesh) == {"livecalc-gateway"}
    assert set(data) == set(ports["data"])
    data_peers, *controller = data[ports["data"][0]]
    assert _admits(data_peers, mesh) == {"livecalc-gateway", "livecalc-engine"}
    # With the ingress component, the controller reaches the data service's gRPC port as well.
    assert controller == ([[INGRESS_CONTROLLER]] if from_outside else [])
    assert set(gateway) == set(ports["gateway"])
    assert gateway[ports["gateway"][0]] == [None], "clients reach the gateway from anywhere"
    for service, admitted in (("engine", engine), ("data", data), ("gateway", gateway)):
        assert _prometheus_only(admitted[ports[service][1]]), f"{service}: metrics open to Prometheus"
        container_ports = {p["containerPort"] for p in mesh.container(service)["ports"]}
        assert set(admitted) == container_ports


def test_pod_monitor_scrapes_every_service(mesh: Rendered) -> None:
    """With the monitoring component, one PodMonitor scrapes every service; without it, none."""
    monitors = mesh.of_kind("PodMonitor")
    components = [(mesh.directory / c).resolve().name for c in kustomization(mesh.directory).get("components", [])]
    assert len(monitors) == ("monitoring" in components)
    for monitor in monitors:
        assert sorted(mesh.pods_selected(monitor["spec"]["selector"])) == [f"livecalc-{s}" for s in SERVICES]
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            for service in SERVICES:
                named = {p["name"]: p["containerPort"] for p in mesh.container(service)["ports"]}
                assert named[endpoint["port"]] == DEFAULT_PORTS[service][1]
                annotations = mesh.deployment(service)["spec"]["template"]["metadata"]["annotations"]
                assert annotations["prometheus.io/port"] == str(named[endpoint["port"]])


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
    _service_selects(mesh, config.jobs.package_address, "gateway")


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


def _hs256(mesh: Rendered) -> bool:
    """Whether the variant runs with the base's HS256 secret (else with an IdP's JWKS)."""
    env = mesh.env("gateway")
    assert (SECRET_FILE_ENV in env) != (JWKS_ENV in env), "one kind of auth"
    return SECRET_FILE_ENV in env


def _secret_file_mount(mesh: Rendered, service: str, path: Path) -> tuple[Doc, dict[str, str]]:
    """The Secret volume that holds the file at `path`, checked, and its items (file → key)."""
    container = mesh.container(service)
    (mount,) = [m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    assert mount["readOnly"] is True
    assert "subPath" not in mount, "a subPath mount would not see the Secret change"
    spec = pod_spec(mesh.deployment(service))
    assert spec is not None
    source = {v["name"]: v for v in spec["volumes"]}[mount["name"]]["secret"]
    assert source.get("optional") is not True, "without its Secret a pod must not start"
    # Owned by root, readable by the pod's fsGroup only: no write, execute or world bits; the
    # service (not root) reads it through its group, so the fsGroup must be its group.
    assert source["defaultMode"] & ~0o440 == 0, oct(source["defaultMode"])
    assert source["defaultMode"] & 0o040, "the service reads it through its group"
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]
    items = {item["path"]: item["key"] for item in source["items"]}
    assert str(path.relative_to(mount["mountPath"])) in items
    return source, items


@pytest.mark.parametrize("service", SERVICES)
def test_pods_mount_their_auth_secret_read_only(mesh: Rendered, service: str) -> None:
    env = mesh.env(service)
    spec = pod_spec(mesh.deployment(service))
    assert spec is not None
    if _hs256(mesh):
        secret_file = Path(env[SECRET_FILE_ENV])
        source, items = _secret_file_mount(mesh, service, secret_file)
        assert source["secretName"] == AUTH_SECRET
        assert items == {secret_file.name: AUTH_SECRET_KEY}
    elif service in CALLERS:
        # With an IdP, the services that call others present its token, from a file kept fresh.
        token_file = Path(env[TOKEN_FILE_ENV])
        source, items = _secret_file_mount(mesh, service, token_file)
        assert source["secretName"] == SERVICE_TOKEN_SECRET
        assert items == {token_file.name: SERVICE_TOKEN_KEY}
    else:
        # The data service only answers: no token of its own, no Secret at all.
        assert TOKEN_FILE_ENV not in env
        assert not [v for v in spec["volumes"] if "secret" in v]


def _pod_security(mesh: Rendered, service: str, secret: Path) -> SecurityConfig:
    """The service's security settings as it resolves them in its pod, the Secret at `secret`."""
    return resolve_security_config({**mesh.env(service), SECRET_FILE_ENV: str(secret)})


@pytest.mark.parametrize("service", SERVICES)
def test_pods_bind_all_interfaces_because_auth_is_on(mesh: Rendered, service: str, tmp_path: Path) -> None:
    env = mesh.env(service)
    if _hs256(mesh):
        secret = tmp_path / AUTH_SECRET_KEY
        secret.write_text(secrets.token_hex(32))  # as `openssl rand -hex 32` makes it
        security = _pod_security(mesh, service, secret)
        assert security.auth is not None and security.auth.hs256_secret == secret.read_bytes()
        auth_setting = SECRET_FILE_ENV
    else:
        security = resolve_security_config(env)
        assert security.auth is not None and security.auth.hs256_secret is None
        assert security.auth.jwks == env[JWKS_ENV]
        assert security.auth.expected_issuer == env["LIVECALC_AUTH_ISSUER"]
        auth_setting = JWKS_ENV
    assert not security.insecure
    check_bind(env["LIVECALC_HOST"], security)
    # Without it, protected mode refuses the bind: nothing else lets the pod listen.
    without = resolve_security_config({k: v for k, v in env.items() if k != auth_setting})
    with pytest.raises(FailedPrecondition):
        check_bind(env["LIVECALC_HOST"], without)
    # The audit sink opens at start-up: stdout, and a file where a read-only root allows one.
    assert security.audit_stdout
    assert security.audit_path == Path(os.devnull), "the root filesystem is read-only"


#: Who calls whom in the mesh: every pair must accept the caller's service token.
CALLS = (("gateway", "engine"), ("gateway", "data"), ("engine", "data"), ("engine", "gateway"))


def test_service_tokens_of_one_pod_pass_in_the_others(mesh: Rendered, tmp_path: Path) -> None:
    """HS256: the gateway and engines mint admin tokens with the shared secret that their peers
    accept. JWKS: they present the IdP's token from their token file, which their peers verify
    by the IdP's keys (a local JWKS file stands in for the IdP's address)."""
    if _hs256(mesh):
        secret = tmp_path / AUTH_SECRET_KEY
        secret.write_text(secrets.token_hex(32) + "\n")
        for caller, callee in CALLS:
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
        return
    idp_key = keys.rsa_key()
    jwks = tmp_path / "jwks.json"
    keys.write_jwks(jwks, {"idp-1": idp_key})
    config = mesh.env("data")
    token = keys.sign(
        idp_key,
        "idp-1",
        "RS256",
        iss=config["LIVECALC_AUTH_ISSUER"],
        aud=config["LIVECALC_AUTH_AUDIENCE"],
        sub="livecalc-mesh",
        tenant="livecalc-mesh",
        roles=[Role.ADMIN.value],
    )
    token_file = tmp_path / SERVICE_TOKEN_KEY
    token_file.write_text(token)
    for caller, callee in CALLS:
        assert TOKEN_FILE_ENV in mesh.env(caller), f"{caller} needs a token to call {callee}"
        env = {**mesh.env(caller), TOKEN_FILE_ENV: str(token_file)}
        credentials = service_credentials(caller, mesh.args(caller), env)
        ((key, value), *_) = credentials.metadata()
        assert (key, value) == ("authorization", f"Bearer {token}")
        auth = resolve_security_config({**mesh.env(callee), JWKS_ENV: str(jwks)}).auth
        assert auth is not None
        principal = asyncio.run(TokenVerifier(auth).verify(token))
        assert Role.ADMIN.value in principal.roles, f"{callee} must accept {caller}'s calls"


def test_datasets_are_on_a_claimed_volume_or_in_azure_blob(mesh: Rendered) -> None:
    """Datasets outlive the data pod: on a claim of the base, or in the azure overlay's container
    (then no claim: no disk for data that lives elsewhere). Every claim is mounted by a pod."""
    deployment = mesh.deployment("data")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate", "one writer of the datasets at a time"
    from_secrets = {name: f"<{secret}/{key}>" for name, (secret, key) in mesh.secret_env("data").items()}
    location = resolve_data_config(mesh.args("data"), {**mesh.env("data"), **from_secrets}).location
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}  # type: ignore[index]
    mounts = {m["mountPath"]: volumes[m["name"]] for m in mesh.container("data")["volumeMounts"]}
    claims = {c["metadata"]["name"]: c for c in mesh.of_kind("PersistentVolumeClaim")}
    if location.azure is None:
        mount = next(path for path in mounts if location.root.is_relative_to(path))
        claim = claims[mounts[mount]["persistentVolumeClaim"]["claimName"]]
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert _quantity(claim["spec"]["resources"]["requests"]["storage"]) >= 10 * 2**30
    else:
        connection = mesh.secret_env("data")["LIVECALC_DATA_AZURE_CONNECTION_STRING"]
        assert connection == ("livecalc-azure", "connection-string")
        assert not [v for v in mounts.values() if "persistentVolumeClaim" in v]
        assert "livecalc-datasets" not in claims
    mounted = {
        v["persistentVolumeClaim"]["claimName"]
        for obj in mesh.objects
        for v in (pod_spec(obj) or {}).get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    assert mounted == set(claims)


def _route(paths: dict[str, Doc], grpc_path: str) -> str:
    """The Service an Ingress sends `grpc_path` to: the longest Prefix path matching whole elements."""
    matching = [p for p in paths if p in ("/", grpc_path) or grpc_path.startswith(p.rstrip("/") + "/")]
    return str(paths[max(matching, key=len)]["metadata"]["name"])


def _methods(descriptor: Any, service: str) -> list[str]:
    full = descriptor.services_by_name[service]
    return [f"/{full.full_name}/{method.name}" for method in full.methods]


def test_the_ingress_speaks_grpc_with_tls_to_the_gateway_and_the_data_service(mesh: Rendered) -> None:
    ingresses = mesh.of_kind("Ingress")
    components = [(mesh.directory / c).resolve().name for c in kustomization(mesh.directory).get("components", [])]
    assert len(ingresses) == ("ingress" in components)
    for ingress in ingresses:
        annotations = ingress["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
        assert annotations["nginx.ingress.kubernetes.io/ssl-redirect"] == "true"
        # An upload is one request body as large as its dataset; a WatchJob lasts as long as its job.
        assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
        for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
            assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600
        hosts = [rule["host"] for rule in ingress["spec"]["rules"]]
        assert hosts and all(hosts), "every rule names its host"
        tls_hosts = {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]}
        assert set(hosts) <= tls_hosts, "TLS for every host"
        assert all(tls["secretName"] for tls in ingress["spec"]["tls"])
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["pathType"] == "Prefix"
                svc = mesh.get("Service", path["backend"]["service"]["name"])
                (port,) = [p for p in svc["spec"]["ports"] if p["name"] == path["backend"]["service"]["port"]["name"]]
                assert port["appProtocol"] == "grpc"
                service = svc["metadata"]["name"].removeprefix("livecalc-")
                named = {p["name"]: p["containerPort"] for p in mesh.container(service)["ports"]}
                assert named[port["targetPort"]] == DEFAULT_PORTS[service][0]
        if mesh.directory.name == "example":
            assert hosts == ["livecalc.acme.example"], "the overlay's host, not the component's placeholder"
    if ingresses:
        # Every RPC a client makes reaches the service that serves it.
        routes = _routes(mesh)
        for method in _methods(data_service_pb2.DESCRIPTOR, "DataService"):
            assert _route(routes, method) == "livecalc-data", method
        gateway_methods = [
            *_methods(job_service_pb2.DESCRIPTOR, "JobService"),
            *_methods(package_service_pb2.DESCRIPTOR, "PackageService"),
            "/grpc.health.v1.Health/Check",
        ]
        for method in gateway_methods:
            assert _route(routes, method) == "livecalc-gateway", method


def _documented_secrets() -> dict[str, set[str]]:
    """Secret → its keys, from the guide's `kubectl create secret` commands."""
    documented: dict[str, set[str]] = {}
    for line in _guide().replace("\\\n", " ").splitlines():
        if "kubectl create secret " not in line:
            continue
        words = shlex.split(line[line.index("kubectl create secret ") :])
        kind, name = words[3], words[4]
        if kind == "tls":
            documented[name] = {"tls.crt", "tls.key"}
        else:
            assert kind == "generic", line
            options = [w.split("=", 1)[1] for w in words if w.startswith(("--from-literal=", "--from-file="))]
            documented[name] = {option.split("=", 1)[0] for option in options}
    return documented


def _secrets_needed(mesh: Rendered) -> dict[str, set[str]]:
    """Secret → the keys the variant's objects read from it."""
    needed: dict[str, set[str]] = {}
    for obj in mesh.objects:
        for volume in (pod_spec(obj) or {}).get("volumes", []):
            if "secret" in volume:
                secret = volume["secret"]
                needed.setdefault(secret["secretName"], set()).update(i["key"] for i in secret["items"])
        for container in containers(obj):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    needed.setdefault(ref["name"], set()).add(ref["key"])
            assert not [s for s in container.get("envFrom", []) if "secretRef" in s]
        if obj["kind"] == "Ingress":
            for tls in obj["spec"]["tls"]:
                needed.setdefault(tls["secretName"], set()).update({"tls.crt", "tls.key"})
    return needed


def test_every_secret_a_variant_reads_is_one_the_guide_creates(mesh: Rendered) -> None:
    documented = _documented_secrets()
    needed = _secrets_needed(mesh)
    assert (AUTH_SECRET if _hs256(mesh) else SERVICE_TOKEN_SECRET) in needed
    for name, read in needed.items():
        assert name in documented, f"the guide does not say how to create the Secret {name}"
        assert read <= documented[name], (name, read, documented[name])


def test_the_guide_builds_and_pushes_the_image_the_example_runs() -> None:
    example = Rendered(ROOT / "k8s" / "overlays" / "example")
    (image,) = {c["image"] for obj in example.objects for c in containers(obj)}
    text = _guide()
    assert f"docker build -t {image} ." in text
    assert f"docker push {image}" in text
