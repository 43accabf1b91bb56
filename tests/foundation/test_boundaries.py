"""Services talk over gRPC only: no service imports another service's modules.

The gateway, the engine and the data service each import `services.common` (infrastructure),
`services.valuation` (the domain more than one service needs, defined once) and the generated
stubs, never each other; `common` and `valuation` import no service. A module that crossed a
line would make the services deployable only together and hide a contract that the protos
should state.
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services"
SHARED = frozenset({"common", "valuation"})
RUNTIME = frozenset({"gateway", "engine", "data"})


def crossings() -> list[str]:
    found = []
    for path in sorted(SERVICES.rglob("*.py")):
        package = path.relative_to(SERVICES).parts[0]
        if package not in SHARED | RUNTIME:
            continue  # the CLI, the client and the bench commands run the mesh from outside
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] != "services" or len(parts) < 2 or parts[1] == package or parts[1] in SHARED:
                    continue
                if parts[1] in RUNTIME or package in SHARED:
                    found.append(f"{path.relative_to(SERVICES.parent)}:{node.lineno} imports {name}")
    return found


def test_no_service_imports_another_services_modules() -> None:
    assert crossings() == []
