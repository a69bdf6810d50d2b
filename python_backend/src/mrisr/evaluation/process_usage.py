"""What a benchmark process used: its peak resident memory, portably (no `resource` import on Windows)."""

from __future__ import annotations

import sys
from pathlib import Path


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB (nan where the platform cannot tell).

    Linux: VmHWM, which (unlike ru_maxrss) restarts at exec, so a spawned child does not inherit its
    parent's peak. Other Unix: ru_maxrss (bytes on macOS, KiB elsewhere).
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    scale = 1 if sys.platform == "darwin" else 1024
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)
