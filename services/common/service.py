"""What each service module provides to the `livecalc serve` command."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry

from services.common.server import ServiceBinding


@dataclass(frozen=True)
class ServiceParts:
    """A service's servicers and the clean-up to run after its server stops."""

    bindings: Sequence[ServiceBinding]
    on_stop: Sequence[Callable[[], Awaitable[None]]] = field(default=())


class ServiceModule(Protocol):
    """The interface of services.<name>.server modules."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the service's own `serve` flags (e.g. --root for data)."""

    async def build(
        self, args: argparse.Namespace, env: Mapping[str, str], registry: CollectorRegistry
    ) -> ServiceParts:
        """Create the servicers from parsed flags and the environment.

        `registry` is the server's Prometheus registry: the service's own metrics go there.
        """
