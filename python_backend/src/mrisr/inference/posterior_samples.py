"""Several posterior samples of a stochastic (diffusion) method: their mean as the estimate and their
per-voxel standard deviation as an uncertainty map.

Each sample is the same method run with the next seed. The mean trades some of a sample's texture for
PSNR; the standard deviation shows where the samples disagree, i.e. where detail is guessed rather
than measured. Knows nothing of patches or samplers: it only calls `run(seed)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from mrisr.errors import InputError
from mrisr.progress import ProgressCallback, ProgressEvent

MAX_SAMPLES = 32


@dataclass(frozen=True)
class SampleStatistics:
    """Mean and standard deviation (ddof 0) over the samples, both float32 on the output grid."""

    mean: np.ndarray
    std: np.ndarray
    samples: int


def check_samples(samples: int, stochastic: bool, method: str) -> None:
    """Refuse a sample count out of range, or more than one sample of a deterministic method."""
    if not isinstance(samples, int) or isinstance(samples, bool) or not 1 <= samples <= MAX_SAMPLES:
        raise InputError(f"samples {samples!r} is out of range: use --samples 1 to {MAX_SAMPLES}")
    if samples > 1 and not stochastic:
        raise InputError(f"method {method!r} is deterministic, so its samples would all be equal: "
                         "use --samples 1 or a diffusion method")


def labelled(progress: ProgressCallback, index: int, samples: int) -> ProgressCallback:
    """`progress` counted over all samples (sample i's units follow those of samples 0..i-1, so bars
    and ETAs cover the whole run) with "sample i/N" in front of each message; unchanged for one sample."""
    if samples == 1:
        return progress

    def report(event: ProgressEvent) -> None:
        progress(ProgressEvent(event.stage, index * event.total + event.done, samples * event.total,
                               f"sample {index + 1}/{samples}: {event.message}".rstrip(": ")))
    return report


def sample_statistics(run: Callable[[int, ProgressCallback], np.ndarray], seed: int, samples: int,
                      progress: ProgressCallback) -> SampleStatistics:
    """Mean and std of `run(seed + i, progress)` for i < samples, accumulated in float64 (Welford) so
    memory stays at three volumes whatever the count."""
    mean = m2 = None
    for index in range(samples):
        sample = run(seed + index, labelled(progress, index, samples)).astype(np.float64)
        if mean is None:
            mean, m2 = sample, np.zeros_like(sample)
            continue
        delta = sample - mean
        mean += delta / (index + 1)
        m2 += delta * (sample - mean)
    return SampleStatistics(mean.astype(np.float32), np.sqrt(m2 / samples).astype(np.float32), samples)
