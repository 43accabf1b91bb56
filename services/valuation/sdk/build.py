"""Compile a model's C into the WASM module the engine's sandbox accepts (PyPI ``ziglang``).

One compile for everyone: ``livecalc package build`` compiles an author's ``src/*.c`` with it
and ``models/build.py`` the shipped models, so both get the same target and flags:

- wasm32, SIMD128 and bulk memory, ``-O3`` and ``-ffp-contract=off`` (no fused multiply-add:
  the same bits as the native ``same_bits`` baseline), a reactor with no entry and no WASI;
- the memory imported as ``env.memory``, nothing else imported; wasm-ld links it unshared
  because ``--shared-memory`` would add a start function that waits on an atomic (the sandbox
  refuses code that can block), so `mark_memory_shared` flips the import's shared flag after
  linking: one byte;
- static data at ``--global-base``: every model of a pipeline shares one memory, so each links
  its data where no other model's lies, below 1 MiB (docs/model-abi.md). `choose_global_base`
  picks the lowest free 64 KiB slot above the other models' data, read from their binaries;
- sources compiled from their own directory by relative name, stripped (``-s``): no path of
  the author's machine enters the binary, and compiling the same sources gives the same bytes.

`build_model` is ``package build``'s part before the archive: regenerate
``src/include/model_interface.h`` from the declaration, compile ``src/*.c`` into the module of
the pipeline's projection node (the ``wasm://NAME`` node reading ``$policies``:
``wasm/NAME.wasm``).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.wasm_binary import StaticData, read_module, static_data
from services.common.wasm_reader import WasmFormatError
from services.valuation.interface.parser import parse_interface
from services.valuation.packages.config import pipeline_issues, pipeline_of
from services.valuation.packages.manifest import CONFIG
from services.valuation.packages.report import Issue, PackageInvalid, error
from services.valuation.sdk.c_header import HEADER_NAME, write_header
from services.valuation.sdk.digest import interface_digest

MAX_MEMORY: Final = 65535 * 65536
"""The memory import's declared maximum (65535 pages, just under 4 GiB); the host picks the real cap."""
STATIC_SLOT: Final = 64 * 1024
"""Static data (data, bss and the module's own small stack) is placed on 64 KiB boundaries."""
STATIC_LIMIT: Final = 1 << 20
"""Every model's static data lies below 1 MiB (the engine's worker stacks start there)."""
STACK_SIZE: Final = 8192
SOURCE_DIR: Final = "src"
INCLUDE_DIR: Final = "include"

WASM_FLAGS: Final = (
    "-target",
    "wasm32-wasi",
    "-O3",
    "-msimd128",
    "-mbulk-memory",
    "-mexec-model=reactor",
    "-ffp-contract=off",
    "-s",
    "-Wl,--no-entry",
    "-Wl,--import-memory",
    f"-Wl,--max-memory={MAX_MEMORY}",
    "-Wl,--export=__stack_pointer",
    "-Wl,--export=__heap_base",
    "-Wl,--export=__data_end",
    "-Wl,--export=__global_base",
    "-z",
    f"stack-size={STACK_SIZE}",
)
"""Target and code generation flags of every model build (warnings are the caller's)."""
AUTHOR_WARNINGS: Final = ("-Wall", "-Wextra")
"""Warnings an author's build shows (they change no byte of the output)."""


class BuildError(InvalidArgument):
    """The C did not compile or link; ``output`` is the compiler's own report, ``target`` the
    package path of the module it was building (when known)."""

    def __init__(self, message: str, output: str = "", target: str = "") -> None:
        super().__init__(message)
        self.output = output
        self.target = target


def compiler_available() -> bool:
    return importlib.util.find_spec("ziglang") is not None


def compile_command(
    sources: Sequence[str], out: Path, *, global_base: int, include_dirs: Sequence[str], warnings: Sequence[str] = ()
) -> list[str]:
    """The ``zig cc`` command line that builds ``sources`` (names relative to the directory it
    runs in) into ``out`` with static data at ``global_base``."""
    return [
        sys.executable,
        "-m",
        "ziglang",
        "cc",
        *WASM_FLAGS,
        *warnings,
        f"-Wl,--global-base={global_base}",
        *(f"-I{d}" for d in include_dirs),
        *sources,
        "-o",
        str(out),
    ]


def _uleb(data: bytes | bytearray, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def mark_memory_shared(wasm: bytes) -> bytes:
    """Set the shared flag on the ``env.memory`` import (limits flags 0x01 → 0x03)."""
    out = bytearray(wasm)
    pos = 8
    while pos < len(out):
        section = out[pos]
        size, pos = _uleb(out, pos + 1)
        if section == 2:
            count, p = _uleb(out, pos)
            for _ in range(count):
                names = []
                for _ in range(2):
                    n, p = _uleb(out, p)
                    names.append(bytes(out[p : p + n]))
                    p += n
                kind = out[p]
                p += 1
                if kind != 0x02:
                    raise BuildError("a model may import only env.memory (no WASI, no host functions)")
                if names == [b"env", b"memory"]:
                    if out[p] != 0x01:
                        raise BuildError("env.memory must be linked with a maximum (--max-memory)")
                    out[p] = 0x03
                    return bytes(out)
        pos += size
    raise BuildError("the module does not import env.memory: link with --import-memory")


def compile_wasm(
    sources: Sequence[str],
    *,
    cwd: Path,
    global_base: int,
    include_dirs: Sequence[str],
    warnings: Sequence[str] = (),
) -> tuple[bytes, str]:
    """Compile and link ``sources`` (relative to ``cwd``) into a model module; returns its bytes
    (memory import marked shared) and the compiler's messages (warnings). `BuildError` with the
    compiler's report when it fails; `FailedPrecondition` without ``ziglang``."""
    if not compiler_available():
        raise FailedPrecondition(
            "compiling a model needs the PyPI package ziglang: pip install 'livecalc-mesh[sdk]' (or ziglang==0.17.1)"
        )
    with tempfile.TemporaryDirectory(prefix="livecalc-build-") as tmp:
        out = Path(tmp) / "model.wasm"
        cmd = compile_command(sources, out, global_base=global_base, include_dirs=include_dirs, warnings=warnings)
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
        messages = (done.stdout + done.stderr).strip()
        if done.returncode != 0 or not out.exists():
            raise BuildError(f"the C did not compile ({', '.join(sources)})", messages)
        linked = out.read_bytes()
    others = [f"{i.module}.{i.name}" for i in read_module(linked).imports if (i.module, i.name) != ("env", "memory")]
    if others:
        raise BuildError(
            f"the module imports {', '.join(others)}: a model may import only env.memory (no WASI, no host "
            "functions: printf, malloc, files and clocks need the operating system)",
            messages,
        )
    return mark_memory_shared(linked), messages


def choose_global_base(size: int, taken: Sequence[StaticData]) -> int:
    """The lowest 64 KiB boundary from 64 KiB up where ``size`` bytes of static data overlap none
    of ``taken`` and end below 1 MiB; `BuildError` when there is none."""
    base = STATIC_SLOT
    while base + size <= STATIC_LIMIT:
        clash = [t for t in taken if t.start < base + max(size, 1) and base < t.end and t.end > t.start]
        if not clash:
            return base
        top = max(t.end for t in clash)
        base = -(-top // STATIC_SLOT) * STATIC_SLOT
    raise BuildError(
        f"no room below 1 MiB for {size:,} bytes of static data beside the pipeline's other models: "
        "make the model's static arrays smaller (use the workspace for run-sized data)"
    )


def compile_model(
    src: Path, taken: Sequence[StaticData], *, warnings: Sequence[str] = AUTHOR_WARNINGS
) -> tuple[bytes, int, str]:
    """Every ``src/*.c`` as one module whose static data avoids ``taken``: (bytes, global base,
    compiler messages). Compiled once at the first free slot for 64 KiB, again at a slot that fits
    when its data turn out larger."""
    sources = sorted(p.name for p in src.glob("*.c"))
    if not sources:
        raise BuildError(f"{src} holds no .c file")
    include = [INCLUDE_DIR] if (src / INCLUDE_DIR).is_dir() else []
    base = choose_global_base(STATIC_SLOT, taken)
    for _ in range(4):
        wasm, messages = compile_wasm(sources, cwd=src, global_base=base, include_dirs=include, warnings=warnings)
        region = static_data(read_module(wasm))
        fits = choose_global_base(max(0, region.end - base), taken)
        if fits == base:
            return wasm, base, messages
        base = fits
    raise BuildError("the model's static data would not settle at one --global-base")  # its size kept changing


@dataclass(frozen=True)
class ModelBuild:
    """What `build_model` did: the module it wrote and how."""

    node: str
    path: Path
    global_base: int
    digest: int
    header_changed: bool
    messages: str


def projection_model(config: Mapping[str, Any]) -> tuple[str, str]:
    """(node id, model name) of the pipeline's ``wasm://`` projection: the node reading ``$policies``."""
    nodes = [n for n in pipeline_of(config) if n.scheme == "wasm" and "$policies" in n.inputs]
    if len(nodes) != 1:
        raise PackageInvalid(
            [
                error(
                    "$.pipeline",
                    f"src/*.c builds the module of the one wasm:// node reading $policies; found {len(nodes)}",
                )
            ]
        )
    return nodes[0].id, nodes[0].model


def _config(root: Path) -> dict[str, Any]:
    path = root / CONFIG
    if not path.is_file():
        raise PackageInvalid([error(CONFIG, "is missing")])
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageInvalid([error(CONFIG, f"is not valid JSON: {exc}")]) from None
    if not isinstance(config, dict):
        raise PackageInvalid([error("$", "the config must be a JSON object")])
    return config


def _other_models(root: Path, config: Mapping[str, Any], target: str) -> tuple[list[StaticData], list[Issue]]:
    """The static data of the pipeline's other ``wasm://`` models (those present)."""
    taken: list[StaticData] = []
    issues: list[Issue] = []
    for name in dict.fromkeys(n.model for n in pipeline_of(config) if n.scheme == "wasm" and n.model != target):
        path = root / "wasm" / f"{name}.wasm"
        if not path.is_file():
            continue  # reported by validation
        try:
            taken.append(static_data(read_module(path.read_bytes())))
        except WasmFormatError as exc:
            issues.append(error(f"wasm/{name}.wasm", exc.message))
    return taken, issues


def has_sources(root: Path) -> bool:
    return any((root / SOURCE_DIR).glob("*.c"))


def build_model(root: Path) -> ModelBuild:
    """Regenerate ``src/include/model_interface.h`` from the declaration and compile ``src/*.c``
    into ``wasm/NAME.wasm`` (NAME: the projection node's model). `PackageInvalid` lists every
    problem that stops it (the declaration, the pipeline); `BuildError` carries the compiler's report."""
    config = _config(root)
    issues = pipeline_issues(config["pipeline"]) if "pipeline" in config else []
    interface, found = parse_interface(config.get("interface"))
    issues = [i for i in [*issues, *found] if i.severity == "error"]
    if interface is None and not issues:
        issues.append(error("$.interface", "required: the model's declared interface (docs/model-interface.md)"))
    if issues:
        raise PackageInvalid(issues)
    assert interface is not None
    node, model = projection_model(config)
    taken, problems = _other_models(root, config, model)
    if problems:
        raise PackageInvalid(problems)
    src = root / SOURCE_DIR
    (src / INCLUDE_DIR).mkdir(parents=True, exist_ok=True)
    try:
        changed = write_header(interface, src / INCLUDE_DIR / HEADER_NAME)
    except ValueError as exc:
        raise PackageInvalid([error("$.interface", str(exc))]) from None
    try:
        wasm, base, messages = compile_model(src, taken)
    except BuildError as exc:
        raise BuildError(exc.message, exc.output, f"wasm/{model}.wasm") from None
    out = root / "wasm" / f"{model}.wasm"
    out.parent.mkdir(exist_ok=True)
    if not out.exists() or out.read_bytes() != wasm:
        out.write_bytes(wasm)  # untouched when equal: its mtime (the archive's createdAt) stays
    return ModelBuild(node, out, base, interface_digest(interface), changed, messages)
