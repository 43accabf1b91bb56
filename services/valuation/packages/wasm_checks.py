"""Static checks of a package's WASM binaries: what the engine's sandbox would refuse at load.

The engine checks the same things when it loads a model (services/engine/sandbox.py); doing
them here, from the bytes alone, keeps a hostile or broken binary out of the package store:
- the bytes are a valid module (wasmtime validates it with the engine's features; nothing runs);
- it imports only ``env.memory``, shared (no WASI, no host functions);
- it exports the entry points of one model kind of the model ABI (a projection or a scenario
  generator), every ABI export has its signature, ``lc_abi_version`` returns the ABI version
  this mesh speaks, and no code can block a thread (``memory.atomic.wait``);
- a projection was built for the package's declaration: the constant its
  ``lc_interface_digest`` returns (written by the SDK's generated header) equals the digest of
  ``$.interface`` (services/valuation/sdk/digest.py); a projection without it gets a warning;
- the static data (data segments, [__global_base, __heap_base)) of the pipeline's models do not
  overlap: they all live in one shared memory.
Every problem of every binary is reported, not the first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import wasmtime

from services.common.wasm_binary import (
    ModuleInfo,
    Signature,
    StaticData,
    read_module,
    static_data,
)
from services.common.wasm_reader import WasmFormatError
from services.valuation.interface.declaration import ModelInterface
from services.valuation.interface.parser import parse_interface
from services.valuation.model_abi import ABI_VERSION, ENTRY_POINTS, SIGNATURES, model_kind
from services.valuation.packages.config import pipeline_of
from services.valuation.packages.report import Issue, error, warning
from services.valuation.sdk.digest import DIGEST_EXPORT, digest_text, interface_digest


def wasm_path(model: str) -> str:
    return f"wasm/{model}.wasm"


def _validator() -> wasmtime.Engine:
    config = wasmtime.Config()
    config.wasm_threads = True
    config.shared_memory = True
    return wasmtime.Engine(config)


def check_binary(
    path: str, wasm: bytes, engine: wasmtime.Engine | None = None
) -> tuple[ModuleInfo | None, list[Issue]]:
    """The facts of one binary and everything wrong with it."""
    try:
        facts = read_module(wasm)
    except WasmFormatError as exc:
        return None, [error(path, exc.message)]
    try:
        wasmtime.Module.validate(engine or _validator(), wasm)
    except wasmtime.WasmtimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return None, [error(path, f"is not a valid WebAssembly module: {lines[-1] if lines else exc}")]
    issues: list[Issue] = []
    forbidden = [
        f"{i.module}.{i.name} ({i.kind})"
        for i in facts.imports
        if (i.module, i.name, i.kind) != ("env", "memory", "memory")
    ]
    if forbidden:
        issues.append(error(path, f"imports {', '.join(forbidden)}: a model may import only env.memory"))
    memory = [i for i in facts.imports if (i.module, i.name, i.kind) == ("env", "memory", "memory")]
    if not memory:
        issues.append(error(path, "does not import env.memory (the model ABI runs models on one shared memory)"))
    elif not memory[0].shared:
        issues.append(error(path, "imports env.memory unshared; the model ABI needs a shared memory"))
    kind = model_kind(facts.functions)
    if kind is None:
        issues.append(error(path, "exports neither lc_run_blocks (a projection) nor lc_prepare_scenarios (a scenario "
                                  "generator): not a model of the model ABI"))  # fmt: skip
    else:
        issues += [
            error(path, f"a {kind} must export {name}") for name in ENTRY_POINTS[kind] if name not in facts.functions
        ]
    for name, want in SIGNATURES.items():
        got = facts.functions.get(name)
        if got is not None and got != want:
            issues.append(error(path, f"export {name} has signature {_sig(got)}; the model ABI needs {_sig(want)}"))
    if "lc_abi_version" in facts.functions:
        if facts.abi_version is None:
            issues.append(warning(path, "lc_abi_version is not a constant; the engine checks the ABI version at load"))
        elif facts.abi_version != ABI_VERSION:
            issues.append(error(path, f"speaks model ABI version {facts.abi_version}; this mesh speaks {ABI_VERSION}"))
    if facts.blocking:
        issues.append(error(path, f"uses {', '.join(sorted(facts.blocking))}: a model may not block a thread (link "
                                  "without --shared-memory; the engine cannot interrupt an atomic wait)"))  # fmt: skip
    return facts, issues


def digest_issues(path: str, facts: ModuleInfo, interface: ModelInterface) -> list[Issue]:
    """A projection built for another declaration than ``interface`` (its ``lc_interface_digest``)."""
    want = interface_digest(interface)
    got = facts.constants.get(DIGEST_EXPORT)
    if got is not None and got & 0xFFFFFFFF != want:
        return [error(path, f"was built for another declaration (digest {digest_text(got)}, the config's is "
                            f"{digest_text(want)}): run livecalc package build")]  # fmt: skip
    if got is None and DIGEST_EXPORT in facts.functions:
        return [warning(path, f"{DIGEST_EXPORT} is not a constant, so the declaration it was built for is unchecked")]
    if got is None:
        unchecked = "so whether it was built for this declaration is unchecked"
        return [warning(path, f"does not export {DIGEST_EXPORT}, {unchecked} (models built against the generated "
                              "model_interface.h export it)")]  # fmt: skip
    return []


_LAYOUT: Final = tuple(f"$.interface.{part}" for part in ("policy.columns", "tables", "parameters", "scenario_inputs",
                                                           "outputs"))  # fmt: skip
"""Where the parts of the declaration the digest covers are (rules and the horizon are not)."""


def _digestible(raw: object) -> ModelInterface | None:
    """The declaration, when every part the digest covers parsed (a broken rule does not matter;
    a broken column would drop out of the digest and make every binary look stale)."""
    interface, issues = parse_interface(raw)
    broken = [i for i in issues if i.severity == "error" and (i.where in ("$", "$.interface") or
                                                              i.where.startswith(_LAYOUT))]  # fmt: skip
    return None if broken else interface


def _sig(sig: Signature) -> str:
    return f"({', '.join(sig[0])}) -> ({', '.join(sig[1])})"


def check_pipeline_binaries(config: Mapping[str, object], files: Mapping[str, bytes]) -> list[Issue]:
    """Check every ``wasm://`` node's binary, and that their static data do not overlap."""
    issues: list[Issue] = []
    facts: dict[str, ModuleInfo] = {}
    statics: dict[str, StaticData] = {}
    engine = _validator()
    interface = _digestible(config.get("interface"))
    for i, node in enumerate(pipeline_of(config)):
        if node.scheme != "wasm" or node.model in facts:
            continue
        path = wasm_path(node.model)
        if path not in files:
            issues.append(error(f"$.pipeline[{i}].engine", f"{node.engine} needs {path}, which is not in the package"))
            continue
        found, problems = check_binary(path, files[path], engine)
        issues += problems
        if found is not None and interface is not None and model_kind(found.functions) == "projection":
            issues += digest_issues(path, found, interface)
        if found is not None:
            try:
                statics[node.model] = static_data(found)
            except WasmFormatError as exc:
                issues.append(error(path, exc.message))
            facts[node.model] = found
    names = sorted(statics)
    for a_i, a in enumerate(names):
        for b in names[a_i + 1 :]:
            sa, sb = statics[a], statics[b]
            if sa.overlaps(sb):
                (a0, a1), (b0, b1) = (sa.start, sa.end), (sb.start, sb.end)
                issues.append(
                    error(
                        wasm_path(b),
                        f"static data [{b0}, {b1}) overlaps {wasm_path(a)}'s [{a0}, {a1}): models share one "
                        "memory, so link each at its own --global-base",
                    )
                )
    return issues
