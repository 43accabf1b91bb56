"""The engines a gateway dispatches to: a fixed list, or every address of a DNS name.

``--engines ADDR[,ADDR…]`` names engines directly; ``dns:///NAME:PORT`` (a Kubernetes headless
Service) is resolved to one address per pod and re-resolved every `resolve_seconds`, so new
pods join and vanished ones leave (docs/architecture.md "4. Dispatch"). Each engine gets its own channel and a
semaphore of as many slots as its GetCapabilities advertises, shared by every job, so an
engine never gets more chunks at once than it said it takes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import grpc
from grpc import aio

from livecalc.engine.v1 import engine_service_pb2, engine_service_pb2_grpc
from services.common.auth.service import ServiceCredentials
from services.common.client import ChannelSecurity, open_aio_channel
from services.common.errors import InvalidArgument
from services.common.retry import Backoff
from services.gateway.provenance import EngineBuild
from services.gateway.speeds import SlotSpeeds, SpeedShape, median_speed

if TYPE_CHECKING:
    from livecalc.engine.v1.engine_service_pb2_grpc import EngineServiceAsyncStub

log = logging.getLogger(__name__)

#: Engines answer larger messages than the default 4 MiB when scenarios are many.
MAX_RECEIVE_BYTES: Final = 64 << 20
CAPABILITIES_TIMEOUT: Final = 5.0
#: Longest pause of an engine after repeated failures, in seconds.
MAX_BACKOFF: Final = 5.0
#: Engines answer large messages; a restarted engine is reconnected within a second or two
#: (gRPC's own reconnect backoff grows to two minutes, which would leave it unused).
CHANNEL_OPTIONS: Final = [
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
#: HTTP/2 PINGs on an engine's channel while calls are open, every this many seconds.
DEFAULT_KEEPALIVE_SECONDS: Final = 10.0


def channel_options(keepalive_seconds: float) -> list[tuple[str, int]]:
    """CHANNEL_OPTIONS plus keepalive: a PING every `keepalive_seconds` while a call is open, and the
    connection (with its calls: UNAVAILABLE, so chunks are requeued) dropped when one goes unanswered
    for as long, at least 1 s. gRPC's own threads answer PINGs, busy WASM threads or not, so this
    finds a hung or vanished engine in about twice the interval however long its chunks' pieces take
    (the stall limit has to outwait the slowest piece). 0 turns it off."""
    if keepalive_seconds <= 0:
        return list(CHANNEL_OPTIONS)
    ms = max(1000, int(keepalive_seconds * 1000))
    return [
        *CHANNEL_OPTIONS,
        ("grpc.keepalive_time_ms", ms),
        ("grpc.keepalive_timeout_ms", ms),
        # any PING's ack, not only keepalive's: a flow-control (BDP) PING already in flight when the
        # engine stops holds the keepalive back, and it waits 60 s by default
        ("grpc.http2.ping_timeout_ms", ms),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
    ]


@dataclass(frozen=True)
class EngineTargets:
    """Where engines are: fixed addresses, or a DNS name and port to resolve."""

    addresses: tuple[str, ...] = ()
    dns_name: str = ""
    dns_port: int = 0

    @classmethod
    def parse(cls, text: str) -> EngineTargets:
        text = text.strip()
        if text.startswith("dns:///"):
            host, sep, port = text[len("dns:///") :].rpartition(":")
            if not sep or not host or not port.isdigit():
                raise InvalidArgument(f"engines: expected dns:///NAME:PORT, got {text!r}")
            return cls(dns_name=host, dns_port=int(port))
        addresses = tuple(a.strip() for a in text.split(",") if a.strip())
        if not addresses:
            raise InvalidArgument("engines: give at least one HOST:PORT, or dns:///NAME:PORT")
        for a in addresses:
            host, sep, port = a.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise InvalidArgument(f"engines: expected HOST:PORT, got {a!r}")
        return cls(addresses=addresses)


@dataclass(eq=False)
class Engine:
    """One engine: its channel, advertised slots and failure backoff."""

    address: str
    channel: aio.Channel
    stub: EngineServiceAsyncStub
    slots: int = 0
    #: Worker threads its chunks' pieces are spread over (GetCapabilities.threads; 0: not said).
    threads: int = 0
    semaphore: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    failures: int = 0
    down_until: float = 0.0
    gone: bool = False
    #: Projection steps per second one of its slots delivers, by job shape: a finished chunk's
    #: steps over its elapsed time (slots share the engine's threads), smoothed.
    speeds: SlotSpeeds = field(default_factory=SlotSpeeds)
    #: The most shared memory a chunk may take on it (GetCapabilities.memory_limit_bytes), and the
    #: most scenarios a chunk can have there (GetCapabilities.max_scenarios; 0: not said).
    memory_limit_bytes: int = 0
    max_scenarios: int = 0
    #: Its version and model ABI version (GetCapabilities), for results' provenance.
    build: EngineBuild = field(default_factory=lambda: EngineBuild("", 0))

    def observe(self, shape: SpeedShape, steps: int, seconds: float) -> None:
        """A chunk of ``shape`` and `steps` took `seconds` on one slot of this engine."""
        self.speeds.observe(shape, steps, seconds)

    def failed(self, base: float) -> float:
        """Record a failure; returns how long the engine is left alone: `base` doubling with each
        failure in a row, at most MAX_BACKOFF. An engine is never given up on (no budget): it leaves
        only when its address does."""
        self.failures += 1
        pause = Backoff(first=base, cap=MAX_BACKOFF).delay(self.failures)
        self.down_until = time.monotonic() + pause
        return pause

    def succeeded(self) -> None:
        self.failures = 0
        self.down_until = 0.0


def median_slot_speed(engines: list[Engine], shape: SpeedShape) -> float:
    """The median slot speed for a job of ``shape`` over the engines that have finished a chunk
    of it (0: none yet), for the planner's chunk size."""
    return median_speed((e.speeds for e in engines), shape)


def block_granule(engines: list[Engine]) -> int:
    """Blocks a chunk is best sized in multiples of (`planner.guided_sizes`): the most worker
    threads an engine has (1 when none said)."""
    return max((e.threads for e in engines), default=1) or 1


class EnginePool:
    """The current engines; `refresh()` resolves names and asks new engines for their slots."""

    def __init__(
        self,
        targets: EngineTargets,
        *,
        resolve_seconds: float = 30.0,
        backoff: float = 0.2,
        credentials: ServiceCredentials | None = None,
        security: ChannelSecurity | None = None,
        keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
    ) -> None:
        self.targets = targets
        self.options = channel_options(keepalive_seconds)
        #: The gateway's service token (RunChunk needs `admin`) and the channels' TLS.
        self.credentials = credentials or ServiceCredentials()
        self.security = security or ChannelSecurity()
        self.resolve_seconds = resolve_seconds
        self.backoff = backoff
        self._engines: dict[str, Engine] = {}
        self._resolved_at = -1e9
        self._lock = asyncio.Lock()

    async def _resolve(self) -> list[str]:
        if not self.targets.dns_name:
            return list(self.targets.addresses)
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.targets.dns_name, self.targets.dns_port, type=socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("cannot resolve engines", extra={"fields": {"name": self.targets.dns_name, "error": str(exc)}})
            return [e.address for e in self._engines.values()]
        out = []
        for family, _, _, _, sockaddr in infos:
            ip = str(sockaddr[0])
            host = f"[{ip}]" if family == socket.AF_INET6 else ip
            out.append(f"{host}:{int(sockaddr[1])}")
        return sorted(set(out))

    async def refresh(self, *, force: bool = False) -> list[Engine]:
        """The engines that answered GetCapabilities; re-resolves when due."""
        async with self._lock:
            now = time.monotonic()
            if force or now - self._resolved_at >= self.resolve_seconds or not self._engines:
                addresses = await self._resolve()
                self._resolved_at = now
                for address in addresses:
                    if address not in self._engines:
                        channel = open_aio_channel(address, self.security, options=self.options)
                        self._engines[address] = Engine(
                            address, channel, engine_service_pb2_grpc.EngineServiceStub(channel)
                        )
                for address, engine in list(self._engines.items()):
                    if address not in addresses:
                        engine.gone = True
                        del self._engines[address]
                        await engine.channel.close(grace=None)
            unknown = [e for e in self._engines.values() if e.slots == 0 and time.monotonic() >= e.down_until]
        if unknown:
            await asyncio.gather(*(self._capabilities(e) for e in unknown))
        return [e for e in self._engines.values() if e.slots > 0 and not e.gone]

    async def _capabilities(self, engine: Engine) -> None:
        try:
            caps = await engine.stub.GetCapabilities(
                engine_service_pb2.GetCapabilitiesRequest(),
                timeout=CAPABILITIES_TIMEOUT,
                metadata=self.credentials.metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            pause = engine.failed(self.backoff)
            log.warning(
                "engine did not answer GetCapabilities",
                extra={"fields": {"engine": engine.address, "code": exc.code().name, "retry_in_s": pause}},
            )
            return
        slots = max(1, int(caps.slots))
        engine.slots = slots
        engine.threads = int(caps.threads)
        engine.memory_limit_bytes = int(caps.memory_limit_bytes)
        engine.max_scenarios = int(caps.max_scenarios)
        engine.build = EngineBuild(caps.engine_version, int(caps.abi_version))
        engine.semaphore = asyncio.Semaphore(slots)
        engine.succeeded()
        log.info("engine", extra={"fields": {"engine": engine.address, "slots": slots, "threads": caps.threads}})

    def engines(self) -> list[Engine]:
        return [e for e in self._engines.values() if e.slots > 0 and not e.gone]

    @property
    def total_slots(self) -> int:
        return sum(e.slots for e in self.engines())

    def block_granule(self) -> int:
        return block_granule(self.engines())

    def slot_steps_per_second(self, shape: SpeedShape) -> float:
        return median_slot_speed(self.engines(), shape)

    async def close(self) -> None:
        for engine in self._engines.values():
            await engine.channel.close(grace=None)
        self._engines.clear()
