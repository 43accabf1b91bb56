"""The interface digest: which declaration a model binary was compiled against, as one u32.

A projection reads its arrays by position (column 3, table 1, parameter 0, output 4), so a
binary built for one declaration and run under another reads the wrong arrays and writes the
wrong outputs without any error. `render_header` writes ``LC_INTERFACE_DIGEST`` into
``model_interface.h`` and the weakly defined export ``lc_interface_digest()`` that returns
it; the package validator compares that constant with the digest of the package's declaration
and reports a binary built for another one.

The digest covers what the compiled code depends on, in declaration order: each column's name,
type and category values (the codes the code compares with), each table's name and number of
axes, each parameter's name and type, the scenario inputs' names, the outputs' names and which
outputs are monthly (the cash flows' indexes; in the description only when some are, so a
declaration without monthly outputs keeps the digest it had before they existed). It
leaves out what the host checks at run time or the code never sees: ranges, defaults, rules,
the horizon, table files and declared sizes (``interface_check`` compares those), descriptions
and which output is primary.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from services.valuation.sdk.c_header import InterfaceDecl

DIGEST_EXPORT: Final = "lc_interface_digest"
"""The export that returns the digest a binary was built with: () -> i32."""

FEATURES_EXPORT: Final = "lc_features"
"""The export that says what a projection writes besides its partials (row values, cash flows): () -> i32."""


def layout_description(interface: InterfaceDecl) -> str:
    """The canonical text the digest hashes: compact JSON, keys sorted, ASCII only."""
    doc: dict[str, Any] = {
        "abi": 2,
        "columns": [[c.name, c.type, list(c.values) if c.type == "category" else []] for c in interface.columns],
        "tables": [[t.name, len(t.axes)] for t in interface.tables],
        "parameters": [[p.name, p.type] for p in interface.parameters],
        "scenario_inputs": [s.name for s in interface.scenario_inputs],
        "outputs": [o.name for o in interface.outputs],
    }
    monthly = [o.name for o in interface.outputs if o.monthly]
    if monthly:
        # only when some output is monthly: a declaration without any keeps the digest it had
        # before outputs could be, so binaries users built then still match their packages
        doc["monthly"] = monthly
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def interface_digest(interface: InterfaceDecl) -> int:
    """The first four bytes of SHA-256 of `layout_description`, big-endian: a u32."""
    return int.from_bytes(hashlib.sha256(layout_description(interface).encode("ascii")).digest()[:4], "big")


def digest_text(digest: int) -> str:
    """``0x1a2b3c4d``: how reports and the header write a digest."""
    return f"0x{digest & 0xFFFFFFFF:08x}"
