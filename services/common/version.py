"""The version of this build of the mesh (the installed distribution's), as every service reports it."""

from __future__ import annotations

from importlib import metadata


def mesh_version() -> str:
    """The livecalc-mesh distribution's version; "unknown" when run from a bare checkout."""
    try:
        return metadata.version("livecalc-mesh")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"
