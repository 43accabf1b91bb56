"""How the gateway runs: one frozen tree of settings, each default written once, here.

`GatewayConfig` is what `livecalc serve gateway` resolves (server.py: flag, else environment,
else the default below); it holds where the engines, the data service and the job store are,
and `JobConfig`, how jobs run, which holds `DispatchConfig`, how one job's chunks are sent to
the engines. Tests build the inner parts directly (`JobConfig(package_address=…)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from services.gateway.engines import DEFAULT_KEEPALIVE_SECONDS, EngineTargets

#: How long a job waits in a row for an engine to take its work: outlasts an engine's restart by
#: a supervisor or a Kubernetes rollout, not a mesh with no engine at all.
DEFAULT_ENGINE_WAIT_SECONDS: Final = 120.0
#: Unfinished jobs a gateway holds before SubmitJob answers RESOURCE_EXHAUSTED.
DEFAULT_MAX_PENDING_JOBS: Final = 100
#: Least time between two progress events of a running job: a few a second, however fast blocks fold.
DEFAULT_PROGRESS_SECONDS: Final = 0.25
DEFAULT_MAX_ATTEMPTS: Final = 4
DEFAULT_STALL_SECONDS: Final = 60.0


@dataclass(frozen=True)
class DispatchConfig:
    """How one job's chunks go to the engines (dispatcher.py says what each fault does)."""

    #: Tries per chunk (engine faults) before the job fails.
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_seconds: float = 0.2
    #: Deadline of one RunChunk call beyond the chunk's own time limit.
    chunk_timeout_seconds: float = 600.0
    #: Pause between looks for new engines while a job runs (DNS targets).
    engine_scan_seconds: float = 5.0
    #: A job that no engine takes work of for this long in a row — none answers, every one
    #: refuses connections (restarting) or is busy with other work — fails with UNAVAILABLE.
    engine_wait_seconds: float = DEFAULT_ENGINE_WAIT_SECONDS
    #: Once every block is folded, how long the calls still open may take to send their summaries.
    drain_seconds: float = 5.0
    #: An engine that sends nothing on a chunk's stream for this long is taken as hung (0: never).
    #: Engines send a message when a chunk starts and after every piece (≈ a block) they compute.
    stall_seconds: float = DEFAULT_STALL_SECONDS


@dataclass(frozen=True)
class JobConfig:
    """How jobs run; `package_address` is where engines download packages (this gateway)."""

    package_address: str
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    progress_seconds: float = DEFAULT_PROGRESS_SECONDS
    statistics_seconds: float = 1.0
    #: Blocks a job may have in flight ahead of its fold, per engine slot, in chunks.
    window_chunks_per_slot: int = 2
    chunk_time_limit_seconds: float = 0.0
    #: Longest time between two checkpoints of a running job's fold.
    checkpoint_seconds: float = 1.0
    #: Admission control: jobs this gateway holds unfinished (queued or running) before
    #: SubmitJob answers RESOURCE_EXHAUSTED; 0 admits every job.
    max_pending_jobs: int = DEFAULT_MAX_PENDING_JOBS


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway's engines, data service and job store are, and how its jobs run."""

    engines: EngineTargets
    data_address: str
    jobs_db: Path
    jobs: JobConfig
    #: How often DNS engine targets are resolved again.
    resolve_seconds: float = 30.0
    #: Keepalive PINGs on engine channels while calls are open (0: off); see engines.channel_options.
    keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS
