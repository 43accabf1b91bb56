"""`make run`'s command (`livecalc run`): the mesh's result hash equals `livecalc run --local`'s,
results.json agrees with statistics recomputed from its vector, the plot is a real PNG of the
expected size, a second run reuses dataset and package with the same hash; on a terminal the
progress bar advances and the table follows.

The exact command comes from `make --dry-run run` (its last line), run with a smaller
portfolio (`RUN_ARGS`) to keep the suite quick; the full 100,000 × 1,000 run takes ~15 s here.
The demo's services stop without draining (`NO_DRAIN` in their environment): no balancer
watches them, and the drain cost each stop 1 s per stage.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shlex
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import numpy as np
import pytest

from services.client.report import PLOT_DPI, PLOT_INCHES
from services.valuation.statistics import result_hash, statistics
from tests.client.clitools import LIVECALC, free_port_offset, hash_line, livecalc, png_size
from tests.support import NO_DRAIN, ROOT

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]
SMALL = ["--rows", "20000", "--scenarios", "300", "--preview", "2000"]


def make_run_command(run_args: list[str]) -> list[str]:
    """The command `make run RUN_ARGS=…` runs: the last line of its dry run."""
    dry = subprocess.run(
        ["make", "--dry-run", "--no-print-directory", "run", f"RUN_ARGS={shlex.join(run_args)}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    line = dry.stdout.strip().splitlines()[-1]
    assert "livecalc run" in line, dry.stdout
    return shlex.split(line)


def test_make_run_hash_equals_local_json_and_png(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    out_dir = tmp_path / "out"
    command = make_run_command([*SMALL, "--port-offset", str(free_port_offset()), "--out-dir", str(out_dir)])
    env = {**os.environ, **NO_DRAIN, "LIVECALC_DATA_DIR": str(data_dir)}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=240, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    mesh_hash = hash_line(out)
    assert "generated 20,000 policies" in out and "package   built" in out
    assert re.search(r"preview was within \d+\.\d\d % of the full run \([\d,]+ (below|above) its mean", out), out
    assert re.search(r"preview   mean [-\d,]+ ± [\d,]+ \(95 %: scenarios and policy sampling; a full run", out), out
    assert "mesh      stopped" in out
    # the last progress line's running mean is the table's mean
    table_mean = re.search(r"^mean net_cf +([-\d,]+)$", out, re.MULTILINE)
    last = [line for line in out.splitlines() if line.startswith("full run: ")][-1]
    assert table_mean and last.startswith("full run: 100.0 %") and f"mean {table_mean[1]} ±" in last, out

    local = livecalc("run", "--local", *SMALL, env={"LIVECALC_DATA_DIR": str(data_dir)}, timeout=240)
    assert local.returncode == 0, local.stderr
    assert hash_line(local.stdout) == mesh_hash

    doc = json.loads((out_dir / "results.json").read_text())
    (primary,) = [o for o in doc["outputs"] if o["primary"]]
    assert doc["primary_output"] == primary["name"] == "net_cf"
    values = np.array(primary["values"], dtype=np.float64)
    assert values.size == 300 and doc["policy_count"] == 20000
    assert doc["result_hash"] == result_hash(values) == mesh_hash
    s, reported = statistics(values), doc["statistics"]
    assert reported["scenario_count"] == s.count
    assert reported["mean"] == s.mean and reported["std"] == s.std and reported["standard_error"] == s.stderr
    assert reported["min"] == s.min and reported["max"] == s.max
    assert [(p["level"], p["value"]) for p in reported["percentiles"]] == list(s.percentiles)
    assert [(c["level"], c["value"]) for c in reported["ctes"]] == list(s.cte)
    assert doc["steps_per_second"] > 0 and doc["preview_comparison"]["sample_policies"] == 2000
    expected_size = (int(PLOT_INCHES[0] * PLOT_DPI), int(PLOT_INCHES[1] * PLOT_DPI))
    assert png_size(out_dir / "distribution.png") == expected_size
    assert (out_dir / "distribution.png").stat().st_size > 20_000  # a drawn histogram, not an empty canvas

    again = subprocess.run(
        [*command[:-4], "--port-offset", str(free_port_offset()), "--out-dir", str(out_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=240,
        check=False,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "reusing" in again.stdout and "already stored" in again.stdout
    assert hash_line(again.stdout) == mesh_hash


def test_terminal_shows_an_advancing_progress_bar_and_the_table(tmp_path: Path) -> None:
    argv = [
        LIVECALC,
        "run",
        "--rows",
        "60000",
        "--scenarios",
        "1000",
        "--preview",
        "5000",
        "--port-offset",
        str(free_port_offset()),
        "--data-dir",
        str(tmp_path / "data"),
    ]
    main, sub = pty.openpty()
    fcntl.ioctl(sub, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {**os.environ, **NO_DRAIN, "TERM": "xterm-256color", "COLUMNS": "160"}
    proc = subprocess.Popen(argv, stdin=sub, stdout=sub, stderr=sub, cwd=ROOT, env=env, close_fds=True)
    os.close(sub)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 1.0)
            if ready:
                try:
                    data = os.read(main, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    lines = [line for line in re.split(r"[\r\n]+", screen) if line.startswith("full run ")]
    shown = [int(m.group(1)) for line in lines if (m := re.search(r"\s(\d{1,3})% ", line))]
    assert len(set(shown)) >= 3 and shown == sorted(shown), shown  # the bar advanced, never backwards
    assert "policies" in screen and "pol/s" in screen and "±" in screen  # count, rate, running mean ± se
    assert "result hash" in screen and "CTE 99 %" in screen and "preview was within" in screen


def services_under(data_dir: Path) -> list[str]:
    """Command lines of the running processes that serve from ``data_dir`` (its datasets)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        line = b" ".join(argv).decode(errors="replace")
        if "serve" in line and str(data_dir) in line:
            found.append(line)
    return found


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_a_hangup_or_term_stops_the_demo_and_its_services(tmp_path: Path, signum: int) -> None:
    # the services run in process groups of their own: a signal that only killed `livecalc run`
    # would leave them serving (issue 19)
    data_dir = tmp_path / "data"
    argv = [str(LIVECALC), "run", *SMALL, "--port-offset", str(free_port_offset()), "--out-dir", str(tmp_path)]
    env = {**os.environ, **NO_DRAIN, "LIVECALC_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=env, text=True)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("mesh      up"):
            break
    assert services_under(data_dir), "".join(seen)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(seen) + out
    assert "interrupted: stopping the mesh" in out
    assert services_under(data_dir) == []
