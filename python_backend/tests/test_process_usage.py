"""Peak memory as the benchmarks record it: it must cover an allocation this process holds now."""

from pathlib import Path

import numpy as np
import pytest

from mrisr.evaluation.process_usage import peak_rss_mib


def _current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux /proc for the current RSS")
def test_peak_rss_covers_a_touched_allocation_in_mib():
    block = np.ones(300 * 2**20 // 8)  # 300 MiB, every page written
    current = _current_rss_mib()
    assert current >= block.nbytes / 2**20
    assert current - 1 <= peak_rss_mib() < 64 * 1024  # MiB, not KiB or bytes
