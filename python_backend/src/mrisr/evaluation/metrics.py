"""Image-quality metrics for super-resolved volumes: PSNR, SSIM, MS-SSIM, GMSD, LR consistency, Dice.

Arrays are numpy (z, y, x) volumes; every metric compares a prediction `pred` with a reference `ref`.
Unless given, `data_range` is the reference's max - min over the whole volume (no percentiles), so the
numbers are reproducible and comparable between methods evaluated against the same reference.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from mrisr.simulation.degradation import acquire_on_grid
from mrisr.errors import InputError
from mrisr.imaging.foreground import foreground_mask
from mrisr.imaging.geometry import Grid, check_same_grid

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # window radius int(3.5 * 1.5 + 0.5) = 5 voxels, i.e. 11 wide, as in Wang et al. 2004
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_WINDOW = 2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
GMSD_C = 170.0


def _pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as float64, refusing mismatched shapes."""
    pred, ref = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if pred.shape != ref.shape:
        raise InputError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}: "
                         "resample the prediction onto the reference grid first")
    return pred, ref


def _range(ref: np.ndarray, data_range: float | None) -> float:
    """The given data range, or the reference's max - min; it must be positive."""
    value = float(ref.max() - ref.min()) if data_range is None else float(data_range)
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"data range {value} is not positive: the reference is constant or "
                         "data_range is wrong; pass a positive data_range")
    return value


def _mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """The mask as a bool array of `shape` with at least one voxel set, or None."""
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise InputError(f"mask shape {mask.shape} differs from image shape {shape}: resample the mask")
    if not mask.any():
        raise InputError("mask is empty: it must select at least one voxel")
    return mask


def _require_volume(array: np.ndarray) -> None:
    """Slice-wise metrics need (z, y, x) volumes."""
    if array.ndim != 3:
        raise InputError(f"expected a 3D (z, y, x) volume, got an array of shape {array.shape}")


def psnr(pred: np.ndarray, ref: np.ndarray, data_range: float | None = None,
         mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(R² / MSE), over `mask` or all voxels.

    R defaults to ref.max() - ref.min() over the whole reference; identical inputs give inf.
    """
    pred, ref = _pair(pred, ref)
    value_range = _range(ref, data_range)
    mask = _mask(mask, ref.shape)
    error = (pred - ref) ** 2
    mse = float(error[mask].mean() if mask is not None else error.mean())
    return float("inf") if mse == 0 else float(10.0 * np.log10(value_range ** 2 / mse))


def _ssim_maps(pred: np.ndarray, ref: np.ndarray, data_range: float) -> tuple[np.ndarray, np.ndarray]:
    """Local SSIM and contrast-structure maps (Wang et al. 2004, Eq. 13) with a Gaussian window."""
    def smooth(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_p, mu_r = smooth(pred), smooth(ref)
    var_p = smooth(pred * pred) - mu_p * mu_p
    var_r = smooth(ref * ref) - mu_r * mu_r
    cov = smooth(pred * ref) - mu_p * mu_r
    cs = (2 * cov + c2) / (var_p + var_r + c2)
    luminance = (2 * mu_p * mu_r + c1) / (mu_p ** 2 + mu_r ** 2 + c1)
    return luminance * cs, cs


def ssim_map(pred: np.ndarray, ref: np.ndarray, data_range: float | None = None) -> np.ndarray:
    """Voxel-wise SSIM map (any dimension), Gaussian window sigma 1.5, reflected borders."""
    pred, ref = _pair(pred, ref)
    return _ssim_maps(pred, ref, _range(ref, data_range))[0]


def ssim(pred: np.ndarray, ref: np.ndarray, data_range: float | None = None,
         mask: np.ndarray | None = None) -> float:
    """Mean 3D SSIM over `mask` or all voxels (K1=0.01, K2=0.03, Gaussian sigma 1.5 truncated at 3.5 sigma).

    Borders are handled by reflection and included in the mean (skimage instead crops 5 voxels).
    """
    local = ssim_map(pred, ref, data_range)
    mask = _mask(mask, local.shape)
    return float(local[mask].mean() if mask is not None else local.mean())


def _downsample(image: np.ndarray) -> np.ndarray:
    """2x2 average then keep every second pixel (a trailing odd row/column is dropped)."""
    rows, cols = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    return image[:rows, :cols].reshape(rows // 2, 2, cols // 2, 2).mean(axis=(1, 3))


def _interior(image: np.ndarray) -> np.ndarray:
    """The part of a map whose window lies inside the image (Wang's 'valid'), if there is one."""
    pad = SSIM_WINDOW // 2
    if min(image.shape) <= 2 * pad:
        return image
    return image[pad:-pad, pad:-pad]


def _ms_ssim_scales(shape: tuple[int, ...]) -> int:
    """How many of the 5 scales fit: the coarsest slice must still be at least one window wide."""
    side, scales = min(shape), 1
    while scales < len(MS_SSIM_WEIGHTS) and side // 2 >= SSIM_WINDOW:
        side, scales = side // 2, scales + 1
    return scales


def _ms_ssim_slice(pred: np.ndarray, ref: np.ndarray, data_range: float, weights: np.ndarray) -> float:
    """MS-SSIM of one 2D slice: mean cs at the fine scales, mean SSIM at the coarsest (Wang 2003, Eq. 7)."""
    values = []
    for scale in range(len(weights)):
        local, cs = _ssim_maps(pred, ref, data_range)
        values.append(_interior(local if scale == len(weights) - 1 else cs).mean())
        pred, ref = _downsample(pred), _downsample(ref)
    return float(np.prod(np.clip(values, 0.0, None) ** weights))


def _non_constant_slices(ref: np.ndarray) -> list[int]:
    """Indices along axis 0 of reference slices that are not constant (e.g. not empty background)."""
    return [k for k in range(ref.shape[0]) if np.ptp(ref[k]) > 0]


def ms_ssim(pred: np.ndarray, ref: np.ndarray, data_range: float | None = None) -> float:
    """Multi-scale SSIM (Wang et al. 2003), 2D per slice along axis 0, averaged over slices.

    Slice-averaged because 3D MS-SSIM needs sides over 160 voxels. Uses as many of the 5 scales as keep
    the coarsest slice at least 11 pixels wide (weights renormalised to sum to 1): all 5 need 176-pixel
    slices, and slices under 22 pixels get plain SSIM. Negative per-scale values are clipped to 0. Slices constant in the reference
    are skipped; nan if all are.
    """
    pred, ref = _pair(pred, ref)
    _require_volume(ref)
    value_range = _range(ref, data_range)
    weights = np.asarray(MS_SSIM_WEIGHTS[: _ms_ssim_scales(ref.shape[1:])])
    weights = weights / weights.sum()
    scores = [_ms_ssim_slice(pred[k], ref[k], value_range, weights) for k in _non_constant_slices(ref)]
    return float(np.mean(scores)) if scores else float("nan")


def _prewitt_magnitude(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude with 3x3 Prewitt kernels (divided by 3) and zero padding, as in Xue et al."""
    kernel = np.array([[1.0, 0.0, -1.0]] * 3) / 3.0
    grad_x = ndimage.correlate(image, kernel, mode="constant")
    grad_y = ndimage.correlate(image, kernel.T, mode="constant")
    return np.sqrt(grad_x ** 2 + grad_y ** 2)


def gmsd(pred: np.ndarray, ref: np.ndarray, data_range: float | None = None) -> float:
    """Gradient magnitude similarity deviation (Xue et al. 2014), per slice along axis 0, slice-averaged.

    Intensities map to [0, 255] via (x - ref.min()) * 255 / data_range; each slice is 2x2-averaged and
    halved, GMS = (2 m1 m2 + 170) / (m1² + m2² + 170), GMSD = std(GMS). Lower is better, 0 when
    identical. Slices constant in the reference are skipped; nan if all are.
    """
    pred, ref = _pair(pred, ref)
    _require_volume(ref)
    scale = 255.0 / _range(ref, data_range)
    offset = ref.min()
    scores = []
    for k in _non_constant_slices(ref):
        m_pred = _prewitt_magnitude(_downsample((pred[k] - offset) * scale))
        m_ref = _prewitt_magnitude(_downsample((ref[k] - offset) * scale))
        similarity = (2 * m_pred * m_ref + GMSD_C) / (m_pred ** 2 + m_ref ** 2 + GMSD_C)
        scores.append(float(similarity.std()))
    return float(np.mean(scores)) if scores else float("nan")


def consistency(output: sitk.Image, lr: sitk.Image, lr_mask: np.ndarray | None = None) -> float:
    """PSNR (dB) between the output re-acquired on the LR grid and the LR input (PDM paper, Eq. 20).

    Measures whether the super-resolved volume explains the acquired data; data_range = LR max - min over
    the whole LR, averaged over `lr_mask` (a (z, y, x) mask on the LR grid) or all LR voxels.
    """
    simulated = sitk.GetArrayFromImage(acquire_on_grid(output, Grid.of(lr)))
    return psnr(simulated, sitk.GetArrayFromImage(lr), mask=lr_mask)


def head_consistency(output: sitk.Image, lr: sitk.Image) -> float:
    """`consistency` inside the LR's own foreground (head) mask: the air, where a model that leaves some
    of the LR noise scores as more consistent than the noise-free truth, is left out."""
    return consistency(output, lr, foreground_mask(sitk.GetArrayFromImage(lr)))


def _label_set(pred: np.ndarray, ref: np.ndarray, labels: Sequence[int] | None) -> list[int]:
    """The labels to score: those given, or the union of nonzero labels in both maps."""
    if labels is None:
        labels = sorted(int(v) for v in np.union1d(np.unique(pred), np.unique(ref)) if v != 0)
    if len(labels) == 0:
        raise InputError("no nonzero labels in either label map: pass the labels to score explicitly")
    return [int(v) for v in labels]


def _overlaps(pred_labels: np.ndarray, ref_labels: np.ndarray,
              labels: Sequence[int] | None) -> dict[int, tuple[int, int, int]]:
    """Per label: (|P ∩ R|, |P|, |R|) voxel counts."""
    pred, ref = np.asarray(pred_labels), np.asarray(ref_labels)
    if pred.shape != ref.shape:
        raise InputError(f"label map shapes differ ({pred.shape} vs {ref.shape}): resample with 'nearest'")
    counts = {}
    for label in _label_set(pred, ref, labels):
        p, r = pred == label, ref == label
        counts[label] = (int(np.count_nonzero(p & r)), int(np.count_nonzero(p)), int(np.count_nonzero(r)))
    return counts


def dice(pred_labels: np.ndarray, ref_labels: np.ndarray,
         labels: Sequence[int] | None = None) -> dict[int, float]:
    """Per-label Dice 2|P∩R| / (|P|+|R|); labels default to all nonzero ones; absent from both -> 1.0."""
    return {label: 1.0 if p + r == 0 else 2.0 * both / (p + r)
            for label, (both, p, r) in _overlaps(pred_labels, ref_labels, labels).items()}


def evaluate(pred: sitk.Image, ref: sitk.Image, lr: sitk.Image | None = None,
             mask: np.ndarray | None = None) -> dict[str, float]:
    """All full-reference metrics of `pred` against `ref` on the same grid, plus LR consistency (whole LR
    and inside its head mask) if given.

    data_range = ref max - min over the whole volume (no percentiles); `mask` restricts PSNR and SSIM.
    """
    check_same_grid(pred, ref)
    pred_array = sitk.GetArrayFromImage(pred).astype(np.float64)
    ref_array = sitk.GetArrayFromImage(ref).astype(np.float64)
    value_range = _range(ref_array, None)
    results = {
        "psnr": psnr(pred_array, ref_array, value_range, mask),
        "ssim": ssim(pred_array, ref_array, value_range, mask),
        "ms_ssim": ms_ssim(pred_array, ref_array, value_range),
        "gmsd": gmsd(pred_array, ref_array, value_range),
        "data_range": value_range,
    }
    if lr is not None:
        results["consistency"] = consistency(pred, lr)
        results["consistency_head"] = head_consistency(pred, lr)
    return results


def _format_value(key: str, value: float | None) -> str:
    """PSNR-like keys (dB) with 2 decimals, others with 4; missing as '-'."""
    if value is None:
        return "-"
    decimals = 2 if key in ("psnr", "consistency", "consistency_head") else 4
    return f"{value:.{decimals}f}"


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A plain-text table: one row per name (e.g. method), one right-aligned column per metric key."""
    keys: list[str] = []
    for metrics in rows.values():
        keys += [key for key in metrics if key not in keys]
    header = ["name", *keys]
    body = [[name, *(_format_value(k, metrics.get(k)) for k in keys)] for name, metrics in rows.items()]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])])

    return "\n".join([line(header), *(line(row) for row in body)])
