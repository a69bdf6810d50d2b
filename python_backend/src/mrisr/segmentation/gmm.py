"""Classical fallback segmenter: a 3-class Gaussian mixture fitted by EM to the intensities inside the
head mask, classes ordered by mean (CSF < GM < WM on T1). It assumes a skull-stripped T1 image: on a
whole head, scalp and skull fall into the three classes too."""

from __future__ import annotations

import numpy as np

from mrisr.imaging.foreground import foreground_mask


def fit_gmm(values: np.ndarray, classes: int = 3, iterations: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights, means, standard deviations) of a 1D Gaussian mixture, initialised at quantiles; sorted by mean."""
    means = np.quantile(values, (np.arange(classes) + 0.5) / classes)
    stds = np.full(classes, values.std() / classes + 1e-6)
    weights = np.full(classes, 1.0 / classes)
    for _ in range(iterations):
        responsibilities = _responsibilities(values, weights, means, stds)
        totals = responsibilities.sum(0) + 1e-12
        weights = totals / len(values)
        means = (responsibilities * values[:, None]).sum(0) / totals
        stds = np.sqrt((responsibilities * (values[:, None] - means) ** 2).sum(0) / totals) + 1e-6
    order = np.argsort(means)
    return weights[order], means[order], stds[order]


def _responsibilities(values: np.ndarray, weights: np.ndarray, means: np.ndarray, stds: np.ndarray) -> np.ndarray:
    log_p = np.log(weights) - np.log(stds) - 0.5 * ((values[:, None] - means) / stds) ** 2
    log_p -= log_p.max(1, keepdims=True)
    p = np.exp(log_p)
    return p / p.sum(1, keepdims=True)


def gmm_labels(volume: np.ndarray) -> np.ndarray:
    """UInt8 labels: 0 outside the head mask, 1–3 the mixture class of each voxel inside (by mean)."""
    mask = foreground_mask(volume, dilation=0)
    labels = np.zeros(volume.shape, np.uint8)
    values = volume[mask].astype(np.float64)
    if values.size < 10:
        return labels
    sample = values[:: max(1, values.size // 200_000)]
    weights, means, stds = fit_gmm(sample)
    labels[mask] = 1 + np.argmax(_responsibilities(values, weights, means, stds), axis=1).astype(np.uint8)
    return labels
