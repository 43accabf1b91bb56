"""Services talk over gRPC only: no service imports another service's modules.

The gateway, the engine and the data service each import `services.common` (infrastructure),
`services.valuation` (the domain more than one service needs, defined once) and the generated
stubs, never each other; `common` and `valuation` import no service. A module that crossed a
line would make the services deployable only together and hide a contract that the protos
should state.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services"
SHARED = frozenset({"common", "valuation"})
RUNTIME = frozenset({"gateway", "engine", "data"})


def absolute_imports(path: Path) -> Iterator[tuple[int, str]]:
    """Each module `path` imports by absolute name, with the line of its import statement."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def crossings() -> list[str]:
    found = []
    for path in sorted(SERVICES.rglob("*.py")):
        package = path.relative_to(SERVICES).parts[0]
        if package not in SHARED | RUNTIME:
            continue  # the CLI, the client and the bench commands run the mesh from outside
        for lineno, name in absolute_imports(path):
            parts = name.split(".")
            if parts[0] != "services" or len(parts) < 2 or parts[1] == package or parts[1] in SHARED:
                continue
            if parts[1] in RUNTIME or package in SHARED:
                found.append(f"{path.relative_to(SERVICES.parent)}:{lineno} imports {name}")
    return found


def test_no_service_imports_another_services_modules() -> None:
    assert crossings() == []


CLIENT = SERVICES.parent / "clients" / "python" / "livecalc_client"


def client_imports_of_services() -> list[str]:
    """The light client (clients/python, livecalc-client) imports grpc, protobuf, the generated
    `livecalc` stubs and itself: never `services`, which its distribution does not contain."""
    allowed = ("livecalc", "livecalc_client", "grpc", "google", "__future__")
    return [
        f"{path.relative_to(SERVICES.parent)}:{lineno} imports {name}"
        for path in sorted(CLIENT.rglob("*.py"))
        for lineno, name in absolute_imports(path)
        if name.split(".")[0] not in allowed and name.split(".")[0] not in sys.stdlib_module_names
    ]


def test_the_light_client_imports_only_grpc_protobuf_and_its_stubs() -> None:
    assert CLIENT.is_dir()
    assert client_imports_of_services() == []
