"""A small kustomize renderer for the tests (no kustomize binary here, and no wheel of it).

It understands only what k8s/ uses: `resources` (files and directories with their own
kustomization), strategic-merge `patches` by path, `labels` (pairs on metadata, optionally on
pod templates) and `images` (newName/newTag). Anything else is an error, so a manifest that
grows a feature this renderer does not know fails the tests instead of rendering wrongly.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]
KNOWN_KEYS = frozenset({"apiVersion", "kind", "resources", "patches", "labels", "images"})
#: Lists whose items merge by their `name` in a strategic-merge patch (as kubectl does).
MERGE_BY_NAME = frozenset({"containers", "initContainers", "env", "volumes", "volumeMounts", "ports"})
POD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job"})


def documents(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(directory: Path) -> list[Doc]:
    """The objects `kubectl kustomize DIRECTORY` would print, in resource order."""
    (kustomization,) = documents(directory / "kustomization.yaml")
    unknown = set(kustomization) - KNOWN_KEYS
    if unknown:
        raise NotImplementedError(f"{directory}: kustomization keys this renderer does not know: {sorted(unknown)}")
    objects: list[Doc] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        objects.extend(render(path) if path.is_dir() else documents(path))
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise NotImplementedError(f"{directory}: only strategic-merge patches by path: {patch}")
        for doc in documents(directory / patch["path"]):
            _apply_patch(objects, doc, directory / patch["path"])
    for label in kustomization.get("labels", []):
        if label.get("includeSelectors"):
            raise NotImplementedError("labels with includeSelectors")
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(label["pairs"])
            if label.get("includeTemplates") and obj["kind"] in POD_KINDS:
                obj["spec"]["template"]["metadata"].setdefault("labels", {}).update(label["pairs"])
    for image in kustomization.get("images", []):
        for container in (c for obj in objects for c in containers(obj)):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}".rstrip(":")
    return objects


def _apply_patch(objects: list[Doc], patch: Doc, where: Path) -> None:
    for obj in objects:
        if obj["kind"] == patch["kind"] and obj["metadata"]["name"] == patch["metadata"]["name"]:
            merged = _merge(obj, patch)
            obj.clear()
            obj.update(merged)
            return
    raise LookupError(f"{where}: {patch['kind']}/{patch['metadata']['name']} patches nothing")


def _merge(base: Any, patch: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        if any(k.startswith("$") for k in patch):
            raise NotImplementedError(f"strategic-merge directives: {sorted(patch)}")
        out = copy.deepcopy(base)
        for k, v in patch.items():
            out[k] = _merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_BY_NAME:
        out_list = copy.deepcopy(base)
        index = {item["name"]: i for i, item in enumerate(out_list)}
        for item in patch:
            if item["name"] in index:
                out_list[index[item["name"]]] = _merge(out_list[index[item["name"]]], item)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def pod_spec(obj: Doc) -> Doc | None:
    return obj["spec"]["template"]["spec"] if obj["kind"] in POD_KINDS else None


def containers(obj: Doc) -> list[Doc]:
    spec = pod_spec(obj)
    return [*spec.get("initContainers", []), *spec["containers"]] if spec else []


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels, matchExpressions In/NotIn/Exists) matches labels."""
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True
