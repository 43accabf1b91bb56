"""Resident memory of processes, for benchmarks and memory tests (Linux only).

A live process's figures come from ``/proc/PID/status``: ``VmRSS`` (resident now) and ``VmHWM``
(its high-water mark, the peak since it started). Once a child has exited and been reaped, /proc
has nothing left of it: `wait_peak_rss_bytes` reaps it and reads the peak from ``wait4`` instead.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any


def _status_bytes(pid: int, key: str) -> int | None:
    """One ``kB`` line of /proc/PID/status in bytes; None when the process or the line is missing."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass  # gone meanwhile (or no /proc)
    return None


def peak_rss_bytes(pid: int) -> int | None:
    """The peak resident set (VmHWM) of a live process; None where /proc has none."""
    return _status_bytes(pid, "VmHWM")


def rss_bytes(pid: int) -> int | None:
    """The resident set now (VmRSS) of a live process; None where /proc has none."""
    return _status_bytes(pid, "VmRSS")


def wait_peak_rss_bytes(proc: subprocess.Popen[Any]) -> int:
    """Wait for the child `proc` to exit and return its peak resident set (``ru_maxrss``, KiB on
    Linux); sets ``proc.returncode`` as `Popen.wait` would."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss * 1024
