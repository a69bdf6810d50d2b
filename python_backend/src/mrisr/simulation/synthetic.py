"""Unlimited synthetic training pairs from the packaged MNI152 template and its tissue maps.

Each pair is a random subject-like volume (affine + elastic deformation, left-right flip, a random
T1/T2/PD-like tissue contrast in the spirit of SynthSR, a smooth bias field) and its simulated
low-field acquisition (random slice thickness/gap/axis, k-space truncation, contrast compression and
noise). The same seed gives the same pair. Training and validation use disjoint seed ranges and
disjoint slice thicknesses, so validation never sees a training volume; being derived from one
template, MNI-based validation is still optimistic for real patients.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from mrisr.simulation.degradation import DegradationConfig, degrade
from mrisr.errors import InputError
from mrisr.imaging.geometry import Grid, resample
from mrisr.imaging.registration import resample_through
from mrisr.simulation.template import mni_image

VALIDATION_SEED_OFFSET = 1_000_000
TRAIN_THICKNESS_MM = (3.0, 4.0, 6.0, 7.0, 8.0)
VALIDATION_THICKNESS_MM = (5.0,)
# Mean intensities (fraction of the maximum) of CSF, GM, WM and non-brain tissue per contrast family.
CONTRASTS = {
    "t1": {"csf": (0.10, 0.30), "gm": (0.45, 0.60), "wm": (0.70, 0.90)},
    "t2": {"csf": (0.80, 1.00), "gm": (0.45, 0.60), "wm": (0.30, 0.42)},
    "pd": {"csf": (0.65, 0.80), "gm": (0.60, 0.72), "wm": (0.48, 0.58)},
}


@dataclass(frozen=True)
class SyntheticPair:
    """HR volume, its LR acquisition (own grid), the LR resampled onto the HR grid, and a reference
    contrast of the same deformed subject (for multi-contrast methods), all float32 images."""

    hr: sitk.Image
    lr: sitk.Image
    condition: sitk.Image
    reference: sitk.Image
    contrast: str
    degradation: DegradationConfig


@lru_cache(maxsize=1)
def template_maps() -> dict[str, np.ndarray]:
    """MNI152 T1 (scaled to [0, 1]) and CSF/GM/WM probability maps; CSF = brain mask − GM − WM."""
    t1 = sitk.GetArrayFromImage(mni_image("t1", pad_to_multiple=40))
    gm = sitk.GetArrayFromImage(mni_image("gm", pad_to_multiple=40))
    wm = sitk.GetArrayFromImage(mni_image("wm", pad_to_multiple=40))
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(gm + wm > 0.2, iterations=4))
    brain = ndimage.gaussian_filter(brain.astype(np.float32), 1.0)
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    return {"t1": t1 / np.float32(t1.max()), "csf": csf, "gm": gm, "wm": wm}


def synthesize_contrast(maps: dict[str, np.ndarray], kind: str, rng: np.random.Generator) -> np.ndarray:
    """A (z, y, x) volume of tissue-class intensities drawn for a T1/T2/PD-like contrast.

    Within-tissue texture is the T1 template's deviation from its own tissue means, so the anatomy's
    fine detail survives every contrast; non-brain tissue keeps a scaled T1 appearance.
    """
    if kind not in CONTRASTS:
        raise InputError(f"contrast {kind!r} is unknown: use one of {', '.join(CONTRASTS)}")
    tissues = ("csf", "gm", "wm")
    weights = np.stack([maps[k] for k in tissues])
    brain = np.clip(weights.sum(0), 0, 1)
    t1_means = [float((maps["t1"] * maps[k]).sum() / maps[k].sum()) for k in tissues]
    piecewise = sum(w * m for w, m in zip(weights, t1_means))
    texture = (maps["t1"] - piecewise) * brain
    means = [rng.uniform(*CONTRASTS[kind][k]) for k in tissues]
    volume = sum(w * m for w, m in zip(weights, means)) + rng.uniform(0.5, 1.2) * texture
    volume += (1 - brain) * maps["t1"] * rng.uniform(0.4, 1.0)
    return np.clip(volume, 0, None).astype(np.float32)


def spatial_transform(grid: Grid, rng: np.random.Generator, strength: float) -> sitk.Transform:
    """Random affine (±10° rotations, ±10 % scale, ±8 mm shift) composed with a smooth elastic field."""
    centre = np.mean(grid.extent_corners(), axis=0)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(tuple(centre))
    angles = np.radians(rng.uniform(-10, 10, 3)) * strength
    rotation = sitk.Euler3DTransform((0, 0, 0), *angles).GetMatrix()
    scale = np.diag(1 + rng.uniform(-0.1, 0.1, 3) * strength)
    affine.SetMatrix(tuple((np.asarray(rotation).reshape(3, 3) @ scale).ravel()))
    affine.SetTranslation(tuple(rng.uniform(-8, 8, 3) * strength))
    coarse = rng.normal(0, 3.0 * strength, (3, 6, 6, 6))
    field = np.stack([ndimage.zoom(c, np.divide(grid.shape, c.shape), order=3) for c in coarse], axis=-1)
    displacement = sitk.GetImageFromArray(field.astype(np.float64), isVector=True)
    displacement.CopyInformation(grid.blank())
    composite = sitk.CompositeTransform([affine, sitk.DisplacementFieldTransform(displacement)])
    return composite


def random_degradation(rng: np.random.Generator, validation: bool = False) -> DegradationConfig:
    """A random low-field acquisition: thick slices (train 3–8 mm except 5; validation 5 mm) with a
    0–2 mm gap along a random axis (z twice as likely), k-space ×1–2 in plane with probability 0.3,
    gamma 0.8–1.3, contrast compression 0–0.4, Rician noise at SNR 10–40."""
    thickness = float(rng.choice(VALIDATION_THICKNESS_MM if validation else TRAIN_THICKNESS_MM))
    return DegradationConfig(
        axis=int(rng.choice([0, 1, 2, 2])),
        slice_thickness=thickness,
        slice_gap=float(rng.choice([0.0, 0.0, 1.0, 2.0])),
        kspace_factor=float(rng.uniform(1.0, 2.0)) if rng.random() < 0.3 else 1.0,
        contrast_gamma=float(rng.uniform(0.8, 1.3)),
        contrast_compression=float(rng.uniform(0.0, 0.4)),
        snr=float(rng.uniform(10, 40)),
        noise="rician",
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def _warp(array: np.ndarray, grid: Grid, transform: sitk.Transform, flip: bool) -> np.ndarray:
    image = resample_through(grid.image_from_array(array), transform, grid, sitk.sitkLinear)
    return image[..., ::-1].copy() if flip else image


def deformed_anatomy(seed: int, validation: bool = False) -> dict[str, np.ndarray]:
    """The template's T1 and CSF/GM/WM maps under random subject number `seed`'s deformation and flip
    (a stream of its own, not the pairs'): ground-truth anatomy for training the tissue segmenter."""
    if seed < 0 or seed >= VALIDATION_SEED_OFFSET:
        raise InputError(f"seed {seed} is out of range: use 0..{VALIDATION_SEED_OFFSET - 1}")
    rng = np.random.default_rng([seed, int(validation), 8])
    grid = Grid.of(mni_image("t1", pad_to_multiple=40))
    transform = spatial_transform(grid, rng, 1.0)
    flip = bool(rng.random() < 0.5)
    maps = template_maps()
    stacked = sitk.Compose([grid.image_from_array(array) for array in maps.values()])  # one warp for all maps
    warped = sitk.Resample(stacked, grid.blank(), transform, sitk.sitkLinear, 0.0, sitk.sitkVectorFloat32)
    array = np.moveaxis(sitk.GetArrayFromImage(warped), -1, 0)
    return {name: (a[..., ::-1] if flip else a).copy() for name, a in zip(maps, array)}


def make_pair(seed: int, validation: bool = False, contrast: str | None = None,
              degradation: DegradationConfig | None = None, spatial_strength: float = 1.0) -> SyntheticPair:
    """The synthetic pair number `seed` of the training (or validation) split; deterministic."""
    if seed < 0 or seed >= VALIDATION_SEED_OFFSET:
        raise InputError(f"seed {seed} is out of range: use 0..{VALIDATION_SEED_OFFSET - 1}")
    rng = np.random.default_rng(seed + (VALIDATION_SEED_OFFSET if validation else 0))
    maps = template_maps()
    grid = Grid.of(mni_image("t1", pad_to_multiple=40))
    transform = spatial_transform(grid, rng, spatial_strength)
    flip = bool(rng.random() < 0.5)
    kind = contrast or str(rng.choice(list(CONTRASTS)))
    reference_kind = "t1" if kind != "t1" else "t2"
    bias = np.exp(ndimage.zoom(rng.normal(0, 0.15, (4, 4, 4)), np.divide(grid.shape, 4), order=3)).astype(np.float32)
    hr = _warp(synthesize_contrast(maps, kind, rng) * bias, grid, transform, flip)
    reference = _warp(synthesize_contrast(maps, reference_kind, rng) * bias, grid, transform, flip)
    config = degradation or random_degradation(rng, validation)
    hr_image = grid.image_from_array(hr)
    lr = degrade(hr_image, config)
    return SyntheticPair(hr_image, lr, resample(lr, grid, "bspline"), grid.image_from_array(reference), kind, config)
