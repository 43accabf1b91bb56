"""A small kustomize renderer for the tests (kustomize's Go binary is no Python dependency).

It understands only what k8s/ uses: `resources` (files and directories with their own
kustomization), `components` (directories whose kustomization is a Component), `patches` by
path (strategic merge, with `$patch: delete` and null deleting; or JSON 6902 with a `target`
kind and name), `labels` (pairs on metadata, optionally on pod templates), `images`
(newName/newTag) and `namespace`. Anything else is an error, so a manifest that grows a
feature this renderer does not know fails the tests instead of rendering wrongly. Where
`kubectl` is installed, tests/foundation/test_k8s_render.py checks that it renders every
variant exactly as `kubectl kustomize` does.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]
KNOWN_KEYS = frozenset({"apiVersion", "kind", "resources", "components", "patches", "labels", "images", "namespace"})
#: A Component: what it may say (its resources and transformers apply to its includer's objects).
COMPONENT_KIND = "Component"
#: Lists whose items merge by a key in a strategic-merge patch, as kubectl's patchMergeKey says
#: (`ports` is a container's by containerPort, a Service's by port).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}
POD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job"})


def documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization(directory: Path) -> Doc:
    (doc,) = documents(directory / "kustomization.yaml")
    assert isinstance(doc, dict)
    return doc


def is_component(directory: Path) -> bool:
    return bool(kustomization(directory).get("kind") == COMPONENT_KIND)


def render(directory: Path) -> list[Doc]:
    """The objects `kubectl kustomize DIRECTORY` would print, in resource order."""
    if is_component(directory):
        raise ValueError(f"{directory} is a Component: it renders only as part of a kustomization")
    return _build(directory, [])


def _build(directory: Path, objects: list[Doc]) -> list[Doc]:
    """`objects` (a Component's includer's, else none) with the kustomization at `directory` applied."""
    spec = kustomization(directory)
    unknown = set(spec) - KNOWN_KEYS
    if unknown:
        raise NotImplementedError(f"{directory}: kustomization keys this renderer does not know: {sorted(unknown)}")
    for entry in spec.get("resources", []):
        path = directory / entry
        if path.is_dir():
            if is_component(path):
                raise ValueError(f"{directory}: {entry} is a Component; list it under components")
            objects.extend(render(path))
        else:
            objects.extend(documents(path))
    for entry in spec.get("components", []):
        if not is_component(directory / entry):
            raise ValueError(f"{directory}: {entry} is not a Component")
        objects = _build(directory / entry, objects)
    for patch in spec.get("patches", []):
        path = directory / patch["path"]
        if set(patch) == {"path"}:
            for doc in documents(path):
                _apply_patch(objects, doc, path)
        elif set(patch) == {"path", "target"} and set(patch["target"]) == {"kind", "name"}:
            (operations,) = documents(path)
            _json6902(_find(objects, patch["target"]["kind"], patch["target"]["name"], path), operations, path)
        else:
            raise NotImplementedError(f"{directory}: only patches by path, or by path and target kind/name: {patch}")
    for label in spec.get("labels", []):
        if label.get("includeSelectors"):
            raise NotImplementedError("labels with includeSelectors")
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(label["pairs"])
            if label.get("includeTemplates") and obj["kind"] in POD_KINDS:
                obj["spec"]["template"]["metadata"].setdefault("labels", {}).update(label["pairs"])
    for image in spec.get("images", []):
        for container in (c for obj in objects for c in containers(obj)):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}".rstrip(":")
    if "namespace" in spec:
        for obj in objects:
            obj["metadata"]["namespace"] = spec["namespace"]
    return objects


def _find(objects: list[Doc], kind: str, name: str, where: Path) -> Doc:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise LookupError(f"{where}: {kind}/{name} patches nothing")


def _apply_patch(objects: list[Doc], patch: Doc, where: Path) -> None:
    obj = _find(objects, patch["kind"], patch["metadata"]["name"], where)
    if patch.get("$patch") == "delete":
        objects.remove(obj)
        return
    merged = _merge(obj, patch)
    obj.clear()
    obj.update(merged)


def _merge(base: Any, patch: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        if any(k.startswith("$") for k in patch):
            raise NotImplementedError(f"strategic-merge directives here: {sorted(patch)}")
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)  # null deletes the key
            else:
                out[k] = _merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and _merge_key(key, base) is not None:
        # As kubectl kustomize orders them: the patch's items first (merged into the base's item of
        # the same key where there is one), in the patch's order, then the base's other items.
        merge_key = _merge_key(key, base)
        by_key = {item[merge_key]: item for item in base}
        merged: list[Any] = []
        touched = set()
        for patch_item in patch:
            directive = patch_item.get("$patch")
            item = {k: v for k, v in patch_item.items() if k != "$patch"}
            touched.add(item[merge_key])
            if directive == "delete":
                continue
            if directive is not None:
                raise NotImplementedError(f"strategic-merge directive $patch: {directive}")
            existing = by_key.get(item[merge_key])
            merged.append(_merge(existing, item) if existing is not None else copy.deepcopy(item))
        return merged + [copy.deepcopy(item) for item in base if item[merge_key] not in touched]
    return copy.deepcopy(patch)


def _merge_key(key: str, items: list[Any]) -> str | None:
    if key == "ports":
        return "containerPort" if items and "containerPort" in items[0] else "port"
    return MERGE_KEYS.get(key)


def _json6902(obj: Doc, operations: list[Doc], where: Path) -> None:
    """RFC 6902 `add`, `replace` and `remove` on `obj`, in place."""
    for op in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node: Any = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] not in ("add", "replace", "remove"):
            raise NotImplementedError(f"{where}: JSON patch op {op['op']!r}")
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op["op"] == "add":
                node.insert(index, copy.deepcopy(op["value"]))
            elif op["op"] == "replace":
                node[index] = copy.deepcopy(op["value"])
            else:
                del node[index]
        elif op["op"] == "remove":
            del node[last]
        else:
            if op["op"] == "replace" and last not in node:
                raise LookupError(f"{where}: {op['path']} is not there to replace")
            node[last] = copy.deepcopy(op["value"])


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
