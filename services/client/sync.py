"""`Client` of the client distribution (`livecalc_client.sync`); importing it through here also
registers the full distribution's package builder (services.client.aio)."""

from __future__ import annotations

import services.client.aio  # noqa: F401  # the package directory builder
from livecalc_client.sync import Client, collect

__all__ = ["Client", "collect"]
