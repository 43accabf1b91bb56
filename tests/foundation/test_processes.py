"""services.common.processes and services.common.rss: child processes started, stopped in stages,
killed after their bound, and their resident memory."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.common import rss
from services.common.errors import Unavailable
from services.common.processes import ServiceProcess, launch, stop_in_stages


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


#: Prints "ready" once its SIGTERM handler is set, then sleeps; SIGTERM ends it with code 0.
OBEYS = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0));"
    " print('ready', flush=True); time.sleep(60)"
)
#: Prints "ready" once it ignores SIGTERM, then sleeps: only SIGKILL ends it.
IGNORES = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
)


def started(code: str, log: Path) -> subprocess.Popen[bytes]:
    proc = launch(python(code), os.environ, log=log)
    deadline = time.monotonic() + 20
    while "ready" not in log.read_text():
        assert time.monotonic() < deadline, f"{log.name} did not start"
        time.sleep(0.02)
    return proc


def test_a_process_that_ignores_sigterm_is_killed_after_the_bound_and_named(tmp_path: Path) -> None:
    obeys, ignores = started(OBEYS, tmp_path / "obeys.log"), started(IGNORES, tmp_path / "ignores.log")
    began = time.monotonic()
    killed = stop_in_stages([[obeys, ignores]], timeout=1.0)
    assert killed == [ignores] and ignores.returncode == -signal.SIGKILL and obeys.returncode == 0
    assert 1.0 <= time.monotonic() - began < 10


def test_a_stopped_process_is_continued_so_that_sigterm_reaches_it(tmp_path: Path) -> None:
    proc = started(OBEYS, tmp_path / "paused.log")
    proc.send_signal(signal.SIGSTOP)
    assert stop_in_stages([[proc]], timeout=10) == [] and proc.returncode == 0


def test_a_later_stage_is_signalled_only_once_the_earlier_one_ended(tmp_path: Path) -> None:
    first, second = started(IGNORES, tmp_path / "first.log"), started(OBEYS, tmp_path / "second.log")
    stop_in_stages([[first], [second]], timeout=0.5)
    # the second stage was still running (not signalled) when the first was killed
    assert first.returncode == -signal.SIGKILL and second.returncode == 0


def test_output_goes_to_the_log_file_or_to_the_sink_with_its_label(tmp_path: Path) -> None:
    proc = launch(python("print('to the file')"), os.environ, log=tmp_path / "out.log")
    assert proc.wait(timeout=20) == 0 and (tmp_path / "out.log").read_text() == "to the file\n"
    sink = io.StringIO()
    proc = launch(python("print('one'); print('two')"), os.environ, label="svc", sink=sink, own_group=True)
    assert proc.wait(timeout=20) == 0
    deadline = time.monotonic() + 10
    while sink.getvalue().count("\n") < 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # the pump is a thread
    assert sink.getvalue() == "[svc] one\n[svc] two\n"


def test_resident_memory_of_this_process_a_child_and_a_gone_one() -> None:
    here = os.getpid()
    now, peak = rss.rss_bytes(here), rss.peak_rss_bytes(here)
    assert now is not None and peak is not None and 0 < now <= peak
    proc = subprocess.Popen(python("b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096])"))
    assert rss.wait_peak_rss_bytes(proc) >= 64 << 20 and proc.returncode == 0
    assert rss.peak_rss_bytes(proc.pid) is None and rss.rss_bytes(proc.pid) is None  # reaped: /proc has none


def test_a_service_that_exits_during_start_up_is_unavailable_and_reaped(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="exited with code 2 during start-up"):
        ServiceProcess.start("data", tmp_path / "data.log", extra=["--no-such-flag"], ready_timeout=30)
    assert "--no-such-flag" in (tmp_path / "data.log").read_text()


@pytest.mark.slow
def test_a_real_service_serves_reports_its_peak_memory_and_stops_on_sigterm(tmp_path: Path) -> None:
    service = ServiceProcess.start("data", tmp_path / "data.log", extra=["--root", str(tmp_path)], label="the data")
    try:
        assert service.label == "the data" and service.extra == ("--root", str(tmp_path))
        peak = service.peak_rss_bytes()
        assert peak is not None and peak > 10 << 20
    finally:
        assert service.terminate(timeout=20) == 0
    assert service.peak_rss_bytes() is None
