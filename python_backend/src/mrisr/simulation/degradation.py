"""Simulated low-quality acquisitions of a high-resolution volume, for training pairs and evaluation.

The degradations are those of the papers this package rebuilds: thick slices with a Gaussian slice
profile (FWHM = slice thickness) decimated by thickness + gap and a low-field contrast change and
noise (DiffusionIQT / Stochastic-IQT), in-plane k-space truncation (PDM, DiffMSR: "k-space zero
padding") and image-space down-sampling (Res-SRDiff). They run in the order contrast -> thick slices
-> k-space truncation -> image-space down-sampling -> noise, each in index space along the image's own
axes with lengths in mm, so oblique and anisotropic inputs keep a correct geometry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter1d

from mrisr.errors import InputError
from mrisr.imaging.geometry import Grid, grid_with_spacing, resample
from mrisr.io.volumes import validate_volume

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548: FWHM of a Gaussian of sigma 1
NOISE_KINDS = ("gaussian", "rician")
TISSUES = ("gm", "wm", "csf")
FOREGROUND_FRACTION = 0.1  # foreground = above this fraction of the image's 99.5th percentile
ROBUST_MAX_PERCENTILE = 99.5
PURE_TISSUE = 0.9  # probability above which a voxel counts as one tissue when measuring tissue means


def _require(ok: bool, field: str, value: object, rule: str) -> None:
    if not ok:
        raise InputError(f"degradation {field}={value!r} is invalid: {rule}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class DegradationConfig:
    """How to turn a high-resolution volume into a simulated low-quality acquisition (lengths in mm)."""

    axis: int = 2
    slice_thickness: float | None = None
    slice_gap: float = 0.0
    kspace_factor: float = 1.0
    downsample_factor: float = 1.0
    contrast_gamma: float = 1.0
    contrast_compression: float = 0.0
    snr: float | None = None
    noise: str = "gaussian"
    seed: int = 0

    def __post_init__(self) -> None:
        axis_ok = isinstance(self.axis, int) and not isinstance(self.axis, bool) and self.axis in (0, 1, 2)
        _require(axis_ok, "axis", self.axis, "must be 0, 1 or 2 (the slice axis in x, y, z index order)")
        thickness = self.slice_thickness
        _require(thickness is None or (_is_number(thickness) and thickness > 0), "slice_thickness", thickness,
                 "must be None (off) or a number of mm > 0")
        _require(_is_number(self.slice_gap) and self.slice_gap >= 0, "slice_gap", self.slice_gap,
                 "must be a number of mm >= 0")
        _require(self.slice_gap == 0 or thickness is not None, "slice_gap", self.slice_gap,
                 "needs slice_thickness to be set (a gap is between thick slices)")
        for field in ("kspace_factor", "downsample_factor"):
            value = getattr(self, field)
            _require(_is_number(value) and value >= 1, field, value, "must be a number >= 1 (1 = off)")
        _require(_is_number(self.contrast_gamma) and 0 < self.contrast_gamma <= 10, "contrast_gamma",
                 self.contrast_gamma, "must be a number in (0, 10] (1 = off)")
        _require(_is_number(self.contrast_compression) and 0 <= self.contrast_compression < 1,
                 "contrast_compression", self.contrast_compression, "must be a number in [0, 1) (0 = off)")
        _require(self.snr is None or (_is_number(self.snr) and self.snr > 0), "snr", self.snr,
                 "must be None (no noise) or a number > 0")
        _require(self.noise in NOISE_KINDS, "noise", self.noise, f"must be one of {', '.join(NOISE_KINDS)}")
        seed_ok = isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0
        _require(seed_ok, "seed", self.seed, "must be an integer >= 0")


PRESETS: dict[str, DegradationConfig] = {
    # Axial thick slices: 5 mm Gaussian slice profile, 5 mm spacing (x5 through-plane from 1 mm).
    "thick5": DegradationConfig(slice_thickness=5.0),
    # DiffusionIQT / Stochastic-IQT: 6 mm slices + 2 mm gap (x8 in z), low-field contrast, Rician SNR 20.
    "iqt8": DegradationConfig(slice_thickness=6.0, slice_gap=2.0, contrast_gamma=1.2,
                              contrast_compression=0.3, snr=20.0, noise="rician"),
    # PDM / DiffMSR: keep the central half of in-plane k-space (x2 in-plane).
    "kspace2": DegradationConfig(kspace_factor=2.0),
    # PDM / DiffMSR: keep the central quarter of in-plane k-space (x4 in-plane).
    "kspace4": DegradationConfig(kspace_factor=4.0),
    # Res-SRDiff: Gaussian anti-alias and image-space down-sampling x4 on every axis.
    "down4": DegradationConfig(downsample_factor=4.0),
    # Portable low-field scan: 5 mm axial slices, flatter darker contrast, Rician SNR 15.
    "lowfield": DegradationConfig(slice_thickness=5.0, contrast_gamma=1.2, contrast_compression=0.3,
                                  snr=15.0, noise="rician"),
}


def get_preset(name: str) -> DegradationConfig:
    """The preset configuration called `name`, or an InputError listing the presets."""
    if name not in PRESETS:
        raise InputError(f"unknown degradation preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _numpy_axis(sitk_axis: int) -> int:
    return 2 - sitk_axis


def _foreground(array: np.ndarray) -> np.ndarray:
    """Boolean mask of voxels above a tenth of the 99.5th percentile (background of MRI is near 0)."""
    level = FOREGROUND_FRACTION * float(np.percentile(array, ROBUST_MAX_PERCENTILE))
    mask = array > level
    return mask if mask.any() else np.ones(array.shape, dtype=bool)


def _gaussian_blur_mm(array: np.ndarray, spacing: tuple[float, ...], fwhm_mm: tuple[float, ...]) -> np.ndarray:
    """Blur a (z, y, x) array with a Gaussian of the given FWHM in mm per sitk (x, y, z) axis (0 = none)."""
    out = array.astype(np.float32, copy=True)
    for sitk_axis, fwhm in enumerate(fwhm_mm):
        if fwhm > 0:
            sigma_voxels = fwhm / FWHM_PER_SIGMA / spacing[sitk_axis]
            out = gaussian_filter1d(out, sigma_voxels, axis=_numpy_axis(sitk_axis), mode="nearest")
    return out


def _lr_grid(grid: Grid, spacing: list[float], field: str, value: float) -> Grid:
    """The coarser grid at `spacing`; at least 2 voxels per axis so the result is still a 3D volume."""
    lr = grid_with_spacing(grid, spacing)
    _require(min(lr.size) >= 2, field, value,
             f"leaves an LR grid of size {lr.size} for an input of size {grid.size} and spacing "
             f"{grid.spacing} mm; every axis needs at least 2 voxels")
    return lr


def _check_tissue_maps(tissue_maps: dict[str, np.ndarray], shape: tuple[int, ...]) -> None:
    for name, probability in tissue_maps.items():
        if name not in TISSUES:
            raise InputError(f"tissue map {name!r} is unknown: use the keys {', '.join(TISSUES)}")
        if np.shape(probability) != shape:
            raise InputError(f"tissue map {name!r} has shape {np.shape(probability)}: it must be the input's "
                             f"(z, y, x) shape {shape}")
        values = np.asarray(probability)
        if not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
            raise InputError(f"tissue map {name!r} has values outside [0, 1]: pass probabilities "
                             f"(divide 0-255 maps by 255)")


def _tissue_mean(x: np.ndarray, probability: np.ndarray) -> float:
    """Mean over nearly pure voxels (p >= 0.9), so partial volume does not pull tissue means together."""
    pure = probability >= PURE_TISSUE
    if pure.any():
        return float(x[pure].mean())
    return float((probability * x).sum() / probability.sum())


def _compress_tissues(x: np.ndarray, tissue_maps: dict[str, np.ndarray], compression: float) -> np.ndarray:
    """Move each tissue's mean towards the mean of all tissues by `compression`, keeping texture.

    Every voxel moves by the sum over tissues of probability x (target mean - tissue mean).
    """
    probabilities = {k: np.asarray(p, dtype=np.float32) for k, p in tissue_maps.items()}
    weights = {k: float(p.sum()) for k, p in probabilities.items()}
    means = {k: _tissue_mean(x, p) for k, p in probabilities.items() if weights[k] > 0}
    if not means:
        return x
    overall = sum(weights[k] * means[k] for k in means) / sum(weights[k] for k in means)
    out = x.copy()
    for k, mean in means.items():
        out += probabilities[k] * np.float32(-compression * (mean - overall))
    return out


def _change_contrast(array: np.ndarray, config: DegradationConfig,
                     tissue_maps: dict[str, np.ndarray] | None) -> np.ndarray:
    """Low-field contrast: gamma on [0, 1]-normalised intensities, then foreground or tissue compression.

    Intensities are divided by the robust maximum (99.5th percentile of the foreground), negative
    values are clipped to 0, and the result is scaled back. Without tissue maps every foreground voxel
    moves towards the foreground mean by the factor (1 - c) (a soft ramp over 5-15 % of the robust max
    avoids a step at the foreground edge); with maps only the tissue means move, within-tissue texture stays.
    """
    robust_max = float(np.percentile(array[_foreground(array)], ROBUST_MAX_PERCENTILE))
    if robust_max <= 0:
        return array
    x = np.clip(array / np.float32(robust_max), 0, None).astype(np.float32) ** np.float32(config.contrast_gamma)
    c = config.contrast_compression
    if tissue_maps is not None:
        x = _compress_tissues(x, tissue_maps, c)
    elif c > 0:
        mean = float(x[_foreground(x)].mean())
        weight = np.clip((x - 0.05) / 0.10, 0, 1)
        x = x + np.float32(c) * weight * (np.float32(mean) - x)
    return (x * np.float32(robust_max)).astype(np.float32)


def _kspace_truncate_axis(array: np.ndarray, axis: int, new_size: int) -> np.ndarray:
    """Keep the central `new_size` frequencies along one numpy axis and return the smaller real image.

    The forward-normalised transforms keep the mean; a linear phase shifts the samples by
    (n/new_size - 1)/2 input voxels so the new voxel centres are those of `grid_with_spacing`.
    """
    n = array.shape[axis]
    spectrum = scipy.fft.fft(array, axis=axis, norm="forward")
    shift = 0.5 * (n / new_size - 1.0)
    phase = np.exp(2j * np.pi * np.fft.fftfreq(n) * shift).astype(spectrum.dtype)
    spectrum *= phase.reshape([-1 if a == axis else 1 for a in range(array.ndim)])
    start = n // 2 - new_size // 2
    cropped = np.take(np.fft.fftshift(spectrum, axes=axis), np.arange(start, start + new_size), axis=axis)
    return scipy.fft.ifft(np.fft.ifftshift(cropped, axes=axis), axis=axis, norm="forward").real


def _thick_slices(image: sitk.Image, config: DegradationConfig) -> sitk.Image:
    """Gaussian slice profile (FWHM = thickness) along the slice axis, then sampling every thickness + gap."""
    grid = Grid.of(image)
    fwhm = [0.0, 0.0, 0.0]
    fwhm[config.axis] = config.slice_thickness
    blurred = _gaussian_blur_mm(sitk.GetArrayViewFromImage(image), grid.spacing, tuple(fwhm))
    spacing = list(grid.spacing)
    spacing[config.axis] = config.slice_thickness + config.slice_gap
    lr = _lr_grid(grid, spacing, "slice_thickness", config.slice_thickness)
    return resample(grid.image_from_array(blurred), lr, "linear")


def _kspace_truncate(image: sitk.Image, config: DegradationConfig) -> sitk.Image:
    """Keep the central 1/factor of k-space on both in-plane axes: the grid spacing grows to keep the extent."""
    grid = Grid.of(image)
    array = sitk.GetArrayFromImage(image)
    spacing = list(grid.spacing)
    for sitk_axis in (a for a in range(3) if a != config.axis):
        n = grid.size[sitk_axis]
        new_size = max(1, round(n / config.kspace_factor))
        spacing[sitk_axis] = grid.spacing[sitk_axis] * n / new_size
        array = _kspace_truncate_axis(array, _numpy_axis(sitk_axis), new_size)
    lr = _lr_grid(grid, spacing, "kspace_factor", config.kspace_factor)
    return lr.image_from_array(array.astype(np.float32))


def _downsample(image: sitk.Image, config: DegradationConfig) -> sitk.Image:
    """Gaussian anti-alias (FWHM sqrt(new^2 - old^2) spacing) then linear resampling at spacing x factor."""
    grid = Grid.of(image)
    spacing = [s * config.downsample_factor for s in grid.spacing]
    fwhm = tuple(math.sqrt(new**2 - old**2) for new, old in zip(spacing, grid.spacing))
    blurred = _gaussian_blur_mm(sitk.GetArrayViewFromImage(image), grid.spacing, fwhm)
    lr = _lr_grid(grid, spacing, "downsample_factor", config.downsample_factor)
    return resample(grid.image_from_array(blurred), lr, "linear")


def _add_noise(array: np.ndarray, sigma: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Gaussian: add N(0, sigma^2); Rician: magnitude of (signal + n1, n2) with n1, n2 ~ N(0, sigma^2)."""
    real = array + np.float32(sigma) * rng.standard_normal(array.shape, dtype=np.float32)
    if kind == "gaussian":
        return real
    imaginary = np.float32(sigma) * rng.standard_normal(array.shape, dtype=np.float32)
    return np.sqrt(real * real + imaginary * imaginary)


def degrade(image: sitk.Image, config: DegradationConfig,
            tissue_maps: dict[str, np.ndarray] | None = None) -> sitk.Image:
    """Simulate a low-quality acquisition of `image`: a float32 volume on its own coarser grid.

    `tissue_maps` are optional (z, y, x) probability arrays in [0, 1] on the input grid keyed
    "gm" / "wm" / "csf"; with them the contrast compression acts on tissue means only.
    Deterministic for a given `config.seed`.
    """
    image = validate_volume(image)
    if tissue_maps is not None:
        _check_tissue_maps(tissue_maps, Grid.of(image).shape)
    if config.contrast_gamma != 1 or config.contrast_compression > 0:
        grid = Grid.of(image)
        image = grid.image_from_array(_change_contrast(sitk.GetArrayFromImage(image), config, tissue_maps))
    if config.slice_thickness is not None:
        image = _thick_slices(image, config)
    if config.kspace_factor > 1:
        image = _kspace_truncate(image, config)
    if config.downsample_factor > 1:
        image = _downsample(image, config)
    if config.snr is not None:
        grid = Grid.of(image)
        array = sitk.GetArrayFromImage(image)
        sigma = float(array[_foreground(array)].mean()) / config.snr
        rng = np.random.default_rng(config.seed)
        image = grid.image_from_array(_add_noise(array, sigma, config.noise, rng).astype(np.float32))
    return image


def acquire_on_grid(image: sitk.Image, grid: Grid) -> sitk.Image:
    """Re-acquire `image` on a coarser `grid` (same direction): a Gaussian profile with FWHM = the grid
    spacing along each axis where it is coarser, then linear resampling. The forward model behind the
    consistency metric (PDM Eq. 20)."""
    source = Grid.of(image)
    fwhm = tuple(t if t > s else 0.0 for t, s in zip(grid.spacing, source.spacing))
    blurred = _gaussian_blur_mm(sitk.GetArrayFromImage(image), source.spacing, fwhm)
    return resample(source.image_from_array(blurred), grid, "linear")


def degrade_to_hr_grid(image: sitk.Image, config: DegradationConfig, interpolator: str = "bspline",
                       tissue_maps: dict[str, np.ndarray] | None = None) -> tuple[sitk.Image, sitk.Image]:
    """(LR volume, LR resampled back onto the input grid): a training or evaluation pair for `image`."""
    lr = degrade(image, config, tissue_maps)
    return lr, resample(lr, Grid.of(image), interpolator)
