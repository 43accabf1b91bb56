"""Process supervision for `livecalc up`: children restarted when they die unasked, stopped in stages.

`spawn` starts one process (services.common.processes.launch) with its output prefixed by its
label, in its own process group, so a terminal's Ctrl-C reaches only the supervising process,
which then stops the children in order. `Supervisor.check()` is one supervision step, called
periodically from one thread: a child that exited is started again after an exponential backoff
with jitter (services.common.retry), and a child that exits more often than `RestartPolicy`
allows within its window ends supervision with `RestartBudgetExceeded`. `stop_children` stops
them highest stage first, waiting for each stage before signalling the next, so a stage can
still use the ones below it while it stops.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

from services.common.errors import InvalidArgument, LivecalcError
from services.common.processes import STOP_TIMEOUT_SECONDS, launch, stop_in_stages
from services.common.retry import Backoff


@dataclass(frozen=True)
class ProcessSpec:
    """How to start one supervised process."""

    #: Its name in logs (each output line is prefixed with it).
    label: str
    argv: tuple[str, ...]
    #: HOST:PORT it serves on, for readiness probes.
    address: str
    #: Higher stages stop first (each waited for before the next); started in list order.
    stage: int = 0


@dataclass(eq=False)
class Child:
    """One running (or exited) process of a `ProcessSpec`; a restart replaces `proc`."""

    spec: ProcessSpec
    proc: subprocess.Popen[bytes]

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def address(self) -> str:
        return self.spec.address


def spawn(spec: ProcessSpec, env: Mapping[str, str], sink: IO[str] | None = None) -> Child:
    """Start `spec`'s process; its output goes to `sink` (default stderr), each line prefixed with
    its label. It gets its own process group: signals for it come from whoever spawned it."""
    return Child(spec, launch(spec.argv, env, label=spec.label, sink=sink, own_group=True))


def exit_description(returncode: int) -> str:
    """'exit code N', or 'killed by SIGNAME' for a process ended by a signal."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def stop_children(children: Sequence[Child], timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM the children highest stage first; each stage is waited for (killed after `timeout`)
    before the next is signalled."""
    stages = sorted({c.spec.stage for c in children}, reverse=True)
    stop_in_stages([[c.proc for c in children if c.spec.stage == stage] for stage in stages], timeout)


#: A crashed child's pauses: 0.5 s, doubling up to 10 s, ± 10 % so that children do not restart in step.
RESTART_BACKOFF = Backoff(first=0.5, cap=10.0, jitter=0.1)


@dataclass(frozen=True)
class RestartPolicy:
    """When a child that exited unasked is started again.

    The n-th restart within `window_seconds` waits `backoff`'s n-th pause (default
    `RESTART_BACKOFF`); an exit that would need more than `max_restarts`
    restarts within the window gives up instead. The window slides: restarts older than it no
    longer count, so a child that crashes now and then is restarted each time.
    """

    max_restarts: int = 5
    window_seconds: float = 60.0
    backoff: Backoff = RESTART_BACKOFF

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.window_seconds <= 0:
            raise InvalidArgument("max_restarts must be ≥ 0 and window_seconds > 0")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds before restart number `attempt` (1-based) within the window."""
        return self.backoff.delay(attempt, rng)


class RestartBudgetExceeded(LivecalcError):
    """A child exited more often than its restart policy allows."""


@dataclass(eq=False)
class _Watch:
    child: Child
    #: When recent restarts were scheduled (those within the policy's window count).
    restarts: deque[float] = field(default_factory=deque)
    #: When the exited process is due to start again; None while it runs.
    restart_at: float | None = None


class Supervisor:
    """Keeps `children` running: `check()` restarts the ones that exited, `stop()` ends them all.

    The supervisor owns the children it is given (`stop()` stops every one) and the processes it
    starts in their place (with `start`, default `spawn`); a restarted child keeps its `Child`
    object, with a new `proc`. Not thread-safe: call `check()` and `stop()` from one thread.
    `say` receives one line per exit and per restart.
    """

    def __init__(
        self,
        children: Sequence[Child],
        env: Mapping[str, str],
        *,
        policy: RestartPolicy | None = None,
        sink: IO[str] | None = None,
        say: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        start: Callable[[ProcessSpec], subprocess.Popen[bytes]] | None = None,
    ) -> None:
        self.env = dict(env)
        self.policy = policy or RestartPolicy()
        self.sink = sink
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.clock = clock
        self.rng = rng or random.Random()
        self._start = start or (lambda spec: spawn(spec, self.env, self.sink).proc)
        self._watches = [_Watch(c) for c in children]
        self.stopping = False

    @property
    def children(self) -> list[Child]:
        return [w.child for w in self._watches]

    def check(self) -> None:
        """Schedule a restart for each child that exited, start those that are due; raises
        `RestartBudgetExceeded` when one exited too often. Does nothing once stopping."""
        if self.stopping:
            return
        now = self.clock()
        for watch in self._watches:
            if watch.restart_at is None:
                code = watch.child.proc.poll()
                if code is not None:
                    self._schedule(watch, code, now)
            elif now >= watch.restart_at:
                old = watch.child.proc.pid
                watch.child.proc = self._start(watch.child.spec)
                watch.restart_at = None
                self.say(f"{watch.child.label} restarted (pid {watch.child.proc.pid}, was {old})")

    def _schedule(self, watch: _Watch, code: int, now: float) -> None:
        policy, label = self.policy, watch.child.label
        while watch.restarts and now - watch.restarts[0] > policy.window_seconds:
            watch.restarts.popleft()
        attempt = len(watch.restarts) + 1
        how = exit_description(code)
        if attempt > policy.max_restarts:
            raise RestartBudgetExceeded(
                f"{label} exited {attempt} times within {policy.window_seconds:g} s (last: {how})"
            )
        watch.restarts.append(now)
        pause = policy.delay(attempt, self.rng)
        watch.restart_at = now + pause
        self.say(
            f"{label} exited ({how}); restarting it in {pause:.1f} s"
            f" (attempt {attempt} of {policy.max_restarts} within {policy.window_seconds:g} s)"
        )

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop every child, highest stage first (`stop_children`); none is restarted after this."""
        self.stopping = True
        stop_children(self.children, timeout)
