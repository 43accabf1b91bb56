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

import contextlib
import io
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
import pytest

from livecalc.gateway.v1 import job_pb2, job_service_pb2
from services.client.aio import package_archive
from services.common.config import DEFAULT_PORTS
from services.common.errors import InvalidArgument
from services.common.retry import Backoff
from services.common.supervisor import (
    Child,
    ProcessSpec,
    RestartBudgetExceeded,
    RestartPolicy,
    Supervisor,
    spawn,
    stop_children,
)
from services.common.up import engine_ports, mesh_plan
from services.gateway.store import JobStore
from services.valuation.blocks import BLOCK_SIZE
from tests.engine.mesh import policies_csv, stochastic_package, upload_package
from tests.gateway.jobmesh import CALL_TIMEOUT, get_job, spec, stub, submit, watch
from tests.support import NO_DRAIN, ROOT, VENV_BIN, free_offset

#: The default restart pauses without their jitter, so the lines say them exactly.
EXACT = Backoff(first=0.5, cap=10.0)


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
    policy = RestartPolicy(backoff=Backoff(first=0.5, cap=4.0, jitter=0.1))
    rng = random.Random(3)
    for attempt, base in enumerate([0.5, 1.0, 2.0, 4.0, 4.0, 4.0], start=1):
        for _ in range(20):
            assert base * 0.9 <= policy.delay(attempt, rng) <= base * 1.1
    assert RestartPolicy().delay(1, rng) == pytest.approx(0.5, rel=0.1)  # the default: from 0.5 s, ± 10 %


def test_a_killed_child_is_restarted_after_its_backoff_with_one_line_each() -> None:
    clock = Clock()
    sup, child, said, started = fake_supervisor(RestartPolicy(max_restarts=3, backoff=EXACT), clock)
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
    sup, _, said, started = fake_supervisor(RestartPolicy(max_restarts=2, window_seconds=10, backoff=EXACT), clock)
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
    sup, _, said, started = fake_supervisor(RestartPolicy(max_restarts=1, window_seconds=10, backoff=EXACT), clock)
    for _ in range(4):
        sup.check()
        clock.now += 0.5
        sup.check()
        clock.now += 11.0  # a long, healthy run before the next crash
        started[-1].code = -signal.SIGSEGV
    assert len(started) == 4
    assert all("restarting it in 0.5 s (attempt 1 of 1 within 10 s)" in line for line in said if "exited" in line)


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(InvalidArgument, match="max_restarts"):
        RestartPolicy(max_restarts=-1)
    with pytest.raises(InvalidArgument, match="window_seconds"):
        RestartPolicy(window_seconds=0)


def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def test_a_real_child_exiting_3_is_restarted_until_the_budget_runs_out() -> None:
    spec = ProcessSpec("flaky", python("import sys; print('up'); sys.exit(3)"), "127.0.0.1:1")
    out = io.StringIO()
    said: list[str] = []
    first = spawn(spec, {**os.environ}, out)
    policy = RestartPolicy(max_restarts=2, backoff=Backoff(first=0.05, cap=0.1, jitter=0.1))
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


def test_stop_children_waits_for_the_gateway_before_signalling_the_rest(tmp_path: Path) -> None:
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
    stop_children(children, timeout=20)
    assert all(c.proc.returncode == 0 for c in children)
    at = {" ".join(line.split()[:2]): float(line.split()[2]) for line in log.read_text().splitlines()}
    assert at["engine-0 term"] >= at["gateway exit"] and at["engine-1 term"] >= at["gateway exit"]
    assert at["data term"] >= max(at["engine-0 exit"], at["engine-1 exit"])


def test_the_mesh_stops_gateway_then_engines_then_data(tmp_path: Path) -> None:
    plan, _ = mesh_plan(tmp_path, 3, 0)
    stage = {spec.label: spec.stage for spec in plan}
    assert stage["gateway"] > stage["engine-0"] == stage["engine-1"] == stage["engine-2"] > stage["data"]


# --- the real `livecalc up --engines 3` -------------------------------------------------------

ROWS = 40 * BLOCK_SIZE
SCENARIOS = 1000
ENGINES = 3
UP_SECONDS = 90


def mesh_ports(offset: int) -> list[int]:
    """Every port of `livecalc up --engines 3 --port-offset OFFSET`."""
    others = [p + offset for name, pair in DEFAULT_PORTS.items() if name != "engine" for p in pair]
    return others + [p for pair in engine_ports(ENGINES, offset) for p in pair]


def pids_serving(ports: list[int]) -> list[int]:
    """The `livecalc serve` processes started with `--port P` for one of `ports` (read from /proc)."""
    wanted = {f"--port\0{p}\0" for p in ports}
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_text()
            except OSError:
                continue
            if "services.cli\0serve\0" in cmdline and any(w in cmdline for w in wanted):
                found.append(int(entry.name))
    return found


class Up:
    """`livecalc up --engines 3` over `data_dir` as a real process (its own process group, as a
    shell's foreground job), its output in a log file; every process of it is gone after `close()`.
    Its services stop without draining (tests.support.NO_DRAIN, under `env`): no balancer watches
    them, and each stage's drain cost a stop 1 s."""

    def __init__(self, data_dir: Path, offset: int, log: Path, env: dict[str, str] | None = None) -> None:
        self.offset, self.log_path = offset, log
        self.gateway = f"127.0.0.1:{DEFAULT_PORTS['gateway'][0] + offset}"
        args = ["--engines", str(ENGINES), "--data-dir", str(data_dir), "--port-offset", str(offset)]
        env = {**os.environ, **NO_DRAIN, "LIVECALC_DATA_DIR": str(data_dir), **(env or {})}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "livecalc"), "up", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )
        deadline = time.monotonic() + UP_SECONDS
        while "livecalc mesh is up" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"livecalc up did not come up:\n{self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def engine_pid(self, index: int) -> int:
        (pid,) = pids_serving([engine_ports(ENGINES, self.offset)[index][0]])
        return pid

    def engine_chunks_ok(self, index: int) -> float:
        """The engine's count of chunks that ended OK (its /metrics; a restart starts it at 0)."""
        port = engine_ports(ENGINES, self.offset)[index][1]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(OK_CHUNKS))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in pids_serving(mesh_ports(self.offset)):  # left behind by a broken stop
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


OK_CHUNKS = 'livecalc_engine_chunks_total{code="OK"}'


@dataclass
class Inputs:
    data_dir: Path
    model_dir: Path
    offset: int


@pytest.fixture
def inputs(tmp_path: Path) -> Inputs:
    """A private data dir holding a 40-block dataset "big"; the reference package's directory."""
    data_dir = tmp_path / "data"
    (data_dir / "datasets").mkdir(parents=True)
    policies_csv(data_dir / "datasets" / "big.csv", ROWS)
    model_dir = tmp_path / "model"
    stochastic_package(model_dir)
    return Inputs(data_dir, model_dir, free_offset(mesh_ports))


def big_job(gateway: str, model_dir: Path) -> job_pb2.JobSpec:
    """The reference package uploaded; a job of one-block chunks (40 of them), in flight for seconds."""
    package_hash = upload_package(gateway, package_archive(model_dir))
    return spec(package_hash, "big", SCENARIOS, chunk_blocks=1)


def run_until(
    gateway: str, job_spec: job_pb2.JobSpec, when: Callable[[job_pb2.JobEvent], bool], act: Callable[[], None]
) -> list[job_pb2.JobEvent]:
    """Submit and read the job's events to its end (or the stream's); `act()` once, at the first
    event for which `when` holds."""
    channel, jobs = stub(gateway)
    events: list[job_pb2.JobEvent] = []
    acted = False
    with channel:
        call = jobs.SubmitJob(job_service_pb2.SubmitJobRequest(spec=job_spec), timeout=CALL_TIMEOUT)
        try:
            for reply in call:
                events.append(reply.event)
                if not acted and when(reply.event):
                    acted = True
                    act()
        except grpc.RpcError:
            pass  # the gateway went away (on purpose)
        finally:
            call.cancel()
    assert acted, f"the job ended before it was mid-flight: {events[-1:]}"
    return events


def mid_job(event: job_pb2.JobEvent) -> bool:
    """Some blocks are done and most are not."""
    p = event.progress
    return event.HasField("progress") and 0 < p.blocks_done < p.blocks_total // 3


def result_of(events: list[job_pb2.JobEvent]) -> job_pb2.JobResult:
    last = events[-1]
    assert last.HasField("result"), f"the job did not succeed: {last}"
    return last.result


def service_lines(log: str, label: str, text: str) -> list[int]:
    """Indexes of the log lines of service `label` that contain `text`."""
    return [i for i, line in enumerate(log.splitlines()) if line.startswith(f"[{label}]") and text in line]


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_killed_engine_is_restarted_and_the_job_succeeds_with_the_same_hash(inputs: Inputs, tmp_path: Path) -> None:
    up = Up(inputs.data_dir, inputs.offset, tmp_path / "up.log")
    try:
        job = big_job(up.gateway, inputs.model_dir)
        undisturbed = result_of(submit(up.gateway, job)).result_hash
        killed = up.engine_pid(1)
        events = run_until(up.gateway, job, mid_job, lambda: os.kill(killed, signal.SIGKILL))
        assert result_of(events).result_hash == undisturbed
        assert up.proc.poll() is None, up.log()  # the mesh stayed up
        log = up.log()
        assert "livecalc up: engine-1 exited (killed by SIGKILL); restarting it in " in log
        assert "(attempt 1 of 5 within 60 s)" in log and "livecalc up: engine-1 restarted (pid " in log
        assert "stopping the mesh" not in log
        restarted = up.engine_pid(1)
        assert restarted != killed
        # the gateway uses the engine again on its old port: a chunk computed by the new process
        for _ in range(2):
            if up.engine_chunks_ok(1) > 0:
                break
            assert result_of(submit(up.gateway, job)).result_hash == undisturbed
        assert up.engine_chunks_ok(1) > 0, up.log()
        assert up.engine_pid(1) == restarted
        os.killpg(up.proc.pid, signal.SIGHUP)  # the terminal closed: up stops the services, none is left
        assert up.proc.wait(timeout=90) == 0, up.log()
        assert pids_serving(mesh_ports(inputs.offset)) == []
    finally:
        up.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigterm_mid_job_stops_the_gateway_first_and_the_next_up_resumes_the_job(
    inputs: Inputs, tmp_path: Path
) -> None:
    # a short grace, so the job outlasts the gateway's stop (within its grace it would just finish)
    short_grace = {"LIVECALC_GRACE_SECONDS": "1", "LIVECALC_DRAIN_SECONDS": "0.5"}
    up = Up(inputs.data_dir, inputs.offset, tmp_path / "up-1.log", short_grace)
    try:
        job = big_job(up.gateway, inputs.model_dir)
        undisturbed = result_of(submit(up.gateway, job)).result_hash
        events = run_until(up.gateway, job, mid_job, lambda: up.proc.send_signal(signal.SIGTERM))
        assert up.proc.wait(timeout=90) == 0, up.log()
    finally:
        up.close()
    job_id = events[0].job_id
    log = up.log()
    gateway_stopped = max(service_lines(log, "gateway", " stopped"))
    engines_signalled = [i for k in range(ENGINES) for i in service_lines(log, f"engine-{k}", "signal received")]
    assert len(engines_signalled) == ENGINES and min(engines_signalled) > gateway_stopped, log
    assert min(service_lines(log, "data", "signal received")) > max(service_lines(log, "engine-0", " stopped")), log

    store = JobStore(inputs.data_dir / "jobs.sqlite3")
    try:
        left = store.get_job(job_id)
        assert left is not None and left.state == job_pb2.JOB_STATE_RUNNING, left
        assert store.checkpoint(job_id) is not None
    finally:
        store.close()

    again = Up(inputs.data_dir, inputs.offset, tmp_path / "up-2.log")
    try:
        assert result_of(watch(again.gateway, job_id)).result_hash == undisturbed
        assert "job resumed from its checkpoint" in again.log()
        assert get_job(again.gateway, job_id).state == job_pb2.JOB_STATE_SUCCEEDED
        os.killpg(again.proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the foreground job's group
        assert again.proc.wait(timeout=90) == 0, again.log()
    finally:
        again.close()
    log = again.log()
    gateway_stopped = max(service_lines(log, "gateway", " stopped"))
    assert min(service_lines(log, "engine-0", "signal received")) > gateway_stopped, log


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_services_stop_on_their_own_when_up_itself_is_killed(tmp_path: Path) -> None:
    # the services run in process groups of their own (so `up` stops them in order): an `up`
    # killed outright (SIGKILL, the OOM killer) cannot stop them, so each watches for it
    offset = free_offset(mesh_ports)
    up = Up(tmp_path / "data", offset, tmp_path / "up.log")
    try:
        assert len(pids_serving(mesh_ports(offset))) == ENGINES + 2
        up.proc.kill()
        up.proc.wait(timeout=10)
        deadline = time.monotonic() + 45
        while pids_serving(mesh_ports(offset)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pids_serving(mesh_ports(offset)) == []  # (their last words went to the dead `up`'s pipe)
    finally:
        up.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ctrl_c_while_the_mesh_starts_stops_it_at_once_and_cleanly(tmp_path: Path) -> None:
    # a signal during start-up used to raise KeyboardInterrupt wherever `up` was, a gRPC probe
    # included (raised while a channel was being made, the same crashed `livecalc run`)
    offset = free_offset(mesh_ports)
    args = ["--engines", str(ENGINES), "--data-dir", str(tmp_path / "data"), "--port-offset", str(offset)]
    proc = subprocess.Popen(
        [str(VENV_BIN / "livecalc"), "up", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "LIVECALC_DATA_DIR": str(tmp_path / "data")},
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not pids_serving(mesh_ports(offset)) and time.monotonic() < deadline:
            time.sleep(0.05)  # the data service is starting: `up` waits for it to serve
        os.killpg(proc.pid, signal.SIGINT)
        started = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out.decode()
        assert time.monotonic() - started < 30
        assert "livecalc mesh is up" not in out.decode()
        assert pids_serving(mesh_ports(offset)) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in pids_serving(mesh_ports(offset)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
