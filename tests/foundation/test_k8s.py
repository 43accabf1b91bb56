"""The Kubernetes manifests: schema-valid, and consistent with what the services serve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.common.config import DEFAULT_PORTS
from services.common.server import HEALTH_NAMES
from tests.support import ROOT

K8S = ROOT / "k8s"
#: Custom resources whose schemas kubernetes-validate does not carry (Prometheus Operator):
#: they are left out of the strict validation here and checked structurally below.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "PodMonitor"), ("monitoring.coreos.com/v1", "ServiceMonitor")}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def base_objects() -> dict[tuple[str, str], dict[str, Any]]:
    kustomization = documents(K8S / "base" / "kustomization.yaml")[0]
    objects = {}
    for resource in kustomization["resources"]:
        for doc in documents(K8S / "base" / resource):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def resource_files() -> list[Path]:
    """The whole objects of the base and the components (their resources, not their patches)."""
    files = []
    for kustomization in sorted(K8S.rglob("kustomization.yaml")):
        if "overlays" not in kustomization.parts:
            resources = documents(kustomization)[0].get("resources", [])
            files.extend(kustomization.parent / r for r in resources if (kustomization.parent / r).is_file())
    return files


@pytest.mark.parametrize("path", resource_files(), ids=str)
def test_base_manifests_validate_strictly(path: Path) -> None:
    for doc in documents(path):
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, "1.37.0", strict=True)


def check_custom_resource(doc: dict[str, Any]) -> None:
    """A structural check of a Prometheus Operator object (its CRD is not bundled)."""
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}, doc["kind"]
    assert doc["metadata"]["name"]
    spec = doc["spec"]
    endpoints_key = "podMetricsEndpoints" if doc["kind"] == "PodMonitor" else "endpoints"
    assert set(spec) <= {"selector", endpoints_key, "namespaceSelector", "jobLabel"}, sorted(spec)
    selector = spec["selector"]
    assert set(selector) <= {"matchLabels", "matchExpressions"} and selector
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] in {"In", "NotIn", "Exists", "DoesNotExist"}
    assert spec[endpoints_key], endpoints_key
    for endpoint in spec[endpoints_key]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}, sorted(endpoint)
        assert isinstance(endpoint["port"], str) and endpoint.get("path", "/metrics").startswith("/")


def test_custom_resources_are_well_formed() -> None:
    docs = [doc for path in manifests() for doc in documents(path) if isinstance(doc, dict) and "kind" in doc]
    custom = [doc for doc in docs if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS]
    assert custom, "no PodMonitor/ServiceMonitor: Prometheus Operator would not scrape the mesh"
    for doc in custom:
        check_custom_resource(doc)


def test_the_base_needs_no_custom_resource_definitions() -> None:
    """The PodMonitor is the optional component components/monitoring: the base applies on any cluster."""
    assert not [key for key, doc in base_objects().items() if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS]
    (monitor,) = documents(K8S / "components" / "monitoring" / "podmonitor.yaml")
    assert monitor["kind"] == "PodMonitor"


def test_kustomizations_reference_existing_files() -> None:
    for kustomization in K8S.rglob("kustomization.yaml"):
        doc = documents(kustomization)[0]
        entries = [*doc.get("resources", []), *doc.get("components", []), *(p["path"] for p in doc.get("patches", []))]
        for entry in entries:
            assert (kustomization.parent / entry).exists(), f"{kustomization}: {entry} is missing"


def test_overlay_patches_target_base_objects() -> None:
    """Every patch of an overlay names an object of the base or of a component."""
    objects = set(base_objects())
    for path in manifests():
        if "components" in path.parts:
            objects.update((doc["kind"], doc["metadata"]["name"]) for doc in documents(path))
    for kustomization in (K8S / "overlays").rglob("kustomization.yaml"):
        for patch in documents(kustomization)[0].get("patches", []):
            if "target" in patch:  # a JSON patch (RFC 6902) of the object its target names
                assert (patch["target"]["kind"], patch["target"]["name"]) in objects, patch
                continue
            for doc in documents(kustomization.parent / patch["path"]):
                assert (doc["kind"], doc["metadata"]["name"]) in objects, f"{patch['path']} patches nothing"


@pytest.mark.parametrize("service", sorted(DEFAULT_PORTS))
def test_ports_and_probes_match_the_servers(service: str) -> None:
    objects = base_objects()
    grpc_port, metrics_port = DEFAULT_PORTS[service]
    deployment = objects[("Deployment", f"livecalc-{service}")]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["args"][:2] == ["serve", service]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": grpc_port, "metrics": metrics_port}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(metrics_port)
    # Kubernetes' gRPC probes name a health service: the names the manifest uses must be
    # ones the servers register (an unknown name answers NOT_FOUND and the pod never starts).
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == grpc_port
        assert container[probe]["grpc"]["service"] in HEALTH_NAMES, probe
    # The pod must outlive the service's own shutdown grace.
    config = objects[("ConfigMap", "livecalc-config")]["data"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(config["LIVECALC_GRACE_SECONDS"])
    assert float(config["LIVECALC_DRAIN_SECONDS"]) <= float(config["LIVECALC_GRACE_SECONDS"])


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_data_memory_budget_fits_the_pod_limit() -> None:
    """The data service's default memory budget, plus its idle size, stays under its limit."""
    from services.data.limits import MIB, DataLimits

    deployment = base_objects()[("Deployment", "livecalc-data")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    limit = _mebibytes(container["resources"]["limits"]["memory"])
    assert DataLimits().memory_budget_bytes / MIB + 512 <= limit


def test_engines_are_headless_for_client_side_balancing() -> None:
    service = base_objects()[("Service", "livecalc-engine")]
    assert service["spec"]["clusterIP"] == "None"
