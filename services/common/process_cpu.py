"""CPU seconds a process has used (user + system, all its threads), for benchmarks (Linux only).

Wall time on a shared machine swings with other work; the CPU a configuration consumed does
far less, so `bench mesh` reports both: what the mesh costs in CPU beyond the same work in one
process is its overhead whatever the load.
"""

from __future__ import annotations

import os


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process from /proc/PID/stat; None where /proc has none."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # after the command's closing parenthesis: state is field 3, utime 14 and stime 15 (1-based)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
