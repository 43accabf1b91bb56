"""`livecalc up` survives a crashed service and stops gateway first (issue 19, item 1).

Before the fix one SIGKILLed engine took the whole embedded mesh down ("engine-0 exited;
stopping the mesh") and the running job FAILED, its chunks burning their attempts against
engines that were shutting down; and a stop signalled every service at once, so engines died
while the gateway was still checkpointing. Now services.common.supervisor restarts a crashed
service after an exponential backoff, within a restart budget, with one line per restart; and
the mesh stops in stages, the gateway first and waited for.

The unit tests drive the supervisor with a fake clock and fake or tiny real processes; the slow
ones run the real `livecalc up --engines 3` over a private data dir.
"""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from services.common.errors import InvalidArgument
from services.common.supervisor import (
    Child,
    ProcessSpec,
    RestartBudgetExceeded,
    RestartPolicy,
    Supervisor,
    spawn,
    stop_in_stages,
)
from services.common.up import mesh_plan


@dataclass
class FakeProc:
    """A process that has exited with `code` (None: still running)."""

    pid: int
    code: int | None = None

    def poll(self) -> int | None:
        return self.code


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def popen(proc: FakeProc) -> subprocess.Popen[bytes]:
    return cast(subprocess.Popen[bytes], proc)


def fake_supervisor(policy: RestartPolicy, clock: Clock) -> tuple[Supervisor, Child, list[str], list[FakeProc]]:
    """A supervisor of one fake child, "engine-0", that has just been SIGKILLed; restarts
    start fake processes that run until the test ends them."""
    spec = ProcessSpec("engine-0", ("engine",), "127.0.0.1:1")
    child = Child(spec, popen(FakeProc(100, -signal.SIGKILL)))
    said: list[str] = []
    started: list[FakeProc] = []

    def start(_: ProcessSpec) -> subprocess.Popen[bytes]:
        started.append(FakeProc(101 + len(started)))
        return popen(started[-1])

    sup = Supervisor([child], {}, policy=policy, say=said.append, clock=clock, rng=random.Random(7), start=start)
    return sup, child, said, started


def test_backoff_doubles_up_to_its_cap_within_the_jitter() -> None:
    policy = RestartPolicy(first_delay=0.5, max_delay=4.0, jitter=0.1)
    rng = random.Random(3)
    for attempt, base in enumerate([0.5, 1.0, 2.0, 4.0, 4.0, 4.0], start=1):
        for _ in range(20):
            assert base * 0.9 <= policy.delay(attempt, rng) <= base * 1.1
    assert RestartPolicy(jitter=0.0).delay(1, rng) == 0.5


def test_a_killed_child_is_restarted_after_its_backoff_with_one_line_each() -> None:
    clock = Clock()
    sup, child, said, started = fake_supervisor(RestartPolicy(max_restarts=3, jitter=0.0), clock)
    sup.check()
    assert said == ["engine-0 exited (killed by SIGKILL); restarting it in 0.5 s (attempt 1 of 3 within 60 s)"]
    clock.now = 0.4
    sup.check()
    assert not started and len(said) == 1  # not before its backoff
    clock.now = 0.5
    sup.check()
    assert child.proc.pid == 101 and said[-1] == "engine-0 restarted (pid 101, was 100)"
    clock.now = 5.0
    sup.check()
    assert len(started) == 1  # it runs: nothing to do

    started[0].code = 3  # the second exit within the window waits twice as long
    sup.check()
    assert said[-1] == "engine-0 exited (exit code 3); restarting it in 1.0 s (attempt 2 of 3 within 60 s)"
    clock.now = 5.9
    sup.check()
    assert len(started) == 1
    clock.now = 6.0
    sup.check()
    assert child.proc.pid == 102


def test_a_child_that_keeps_dying_exhausts_the_budget() -> None:
    clock = Clock()
    sup, _, said, started = fake_supervisor(RestartPolicy(max_restarts=2, window_seconds=10, jitter=0.0), clock)
    for _ in range(2):
        sup.check()  # exited: restart scheduled
        clock.now += 5.0
        sup.check()  # restarted
        started[-1].code = 1
    with pytest.raises(RestartBudgetExceeded) as exc:
        sup.check()
    assert str(exc.value) == "engine-0 exited 3 times within 10 s (last: exit code 1)"
    assert [line.split(";")[0] for line in said if "exited" in line] == [
        "engine-0 exited (killed by SIGKILL)",
        "engine-0 exited (exit code 1)",
    ]


def test_restarts_older_than_the_window_do_not_count() -> None:
    clock = Clock()
    sup, _, said, started = fake_supervisor(RestartPolicy(max_restarts=1, window_seconds=10, jitter=0.0), clock)
    for _ in range(4):
        sup.check()
        clock.now += 0.5
        sup.check()
        clock.now += 11.0  # a long, healthy run before the next crash
        started[-1].code = -signal.SIGSEGV
    assert len(started) == 4
    assert all("restarting it in 0.5 s (attempt 1 of 1 within 10 s)" in line for line in said if "exited" in line)


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(InvalidArgument, match="first_delay"):
        RestartPolicy(first_delay=5.0, max_delay=1.0)
    with pytest.raises(InvalidArgument, match="window_seconds"):
        RestartPolicy(window_seconds=0)


def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def test_a_real_child_exiting_3_is_restarted_until_the_budget_runs_out() -> None:
    spec = ProcessSpec("flaky", python("import sys; print('up'); sys.exit(3)"), "127.0.0.1:1")
    out = io.StringIO()
    said: list[str] = []
    first = spawn(spec, {**os.environ}, out)
    policy = RestartPolicy(max_restarts=2, first_delay=0.05, max_delay=0.1)
    sup = Supervisor([first], {**os.environ}, policy=policy, sink=out, say=said.append)
    deadline = time.monotonic() + 30
    with pytest.raises(RestartBudgetExceeded, match=r"flaky exited 3 times within 60 s \(last: exit code 3\)"):
        while time.monotonic() < deadline:
            sup.check()
            time.sleep(0.02)
    assert [line.split(";")[0] for line in said if "exited" in line] == ["flaky exited (exit code 3)"] * 2
    assert sum("flaky restarted" in line for line in said) == 2
    assert first.proc.wait(timeout=10) == 3
    time.sleep(0.2)  # the output pumps are threads
    assert out.getvalue().count("[flaky] up\n") == 3


def test_no_restart_once_stopping() -> None:
    spec = ProcessSpec("sleeper", python("import time; time.sleep(60)"), "127.0.0.1:1")
    child = spawn(spec, {**os.environ})
    assert os.getpgid(child.proc.pid) == child.proc.pid  # its own group: a terminal's Ctrl-C is not for it
    said: list[str] = []
    sup = Supervisor([child], {**os.environ}, say=said.append)
    sup.stop(timeout=10)
    assert child.proc.returncode == -signal.SIGTERM
    sup.check()
    assert said == [] and child.proc.poll() == -signal.SIGTERM


STAGED = """
import signal, sys, time
name, delay, log = sys.argv[1], float(sys.argv[2]), sys.argv[3]
def on_term(*_):
    open(log, "a").write(f"{name} term {time.monotonic()}\\n")
    time.sleep(delay)
    open(log, "a").write(f"{name} exit {time.monotonic()}\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
open(log, "a").write(f"{name} ready 0\\n")
while True:
    time.sleep(0.05)
"""


def test_stop_in_stages_waits_for_the_gateway_before_signalling_the_rest(tmp_path: Path) -> None:
    log = tmp_path / "log"
    stages = [("data", 0.0, 0), ("engine-0", 0.0, 1), ("engine-1", 0.0, 1), ("gateway", 1.0, 2)]
    children = [
        spawn(ProcessSpec(name, (*python(STAGED), name, str(delay), str(log)), "", stage), {**os.environ})
        for name, delay, stage in stages
    ]
    deadline = time.monotonic() + 30
    while (log.read_text().count("ready") if log.exists() else 0) < len(stages):
        assert time.monotonic() < deadline, "the children did not start"
        time.sleep(0.05)
    stop_in_stages(children, timeout=20)
    assert all(c.proc.returncode == 0 for c in children)
    at = {" ".join(line.split()[:2]): float(line.split()[2]) for line in log.read_text().splitlines()}
    assert at["engine-0 term"] >= at["gateway exit"] and at["engine-1 term"] >= at["gateway exit"]
    assert at["data term"] >= max(at["engine-0 exit"], at["engine-1 exit"])


def test_the_mesh_stops_gateway_then_engines_then_data(tmp_path: Path) -> None:
    plan, _ = mesh_plan(tmp_path, 3, 0)
    stage = {spec.label: spec.stage for spec in plan}
    assert stage["gateway"] > stage["engine-0"] == stage["engine-1"] == stage["engine-2"] > stage["data"]
