"""Training slices for the tissue segmenter: deformed MNI152 anatomies (cached) rendered as random
T1-weighted slices with the artefacts of the images it must label.

Per slice (all random): T1-like tissue intensities (CSF < GM < WM) with the template's texture, a
synthetic skull/scalp shell around the brain (labelled background) in 60 % of slices, a smooth bias
field, gamma, the look of an interpolated thick-slice acquisition (block average of 2–8 voxels along
one in-plane axis, cubic re-interpolation; 50 %) or a mild blur (25 %), Rician noise, then the
pipeline's robust intensity scaling with ±10 % jitter. Targets are the warped probability maps
(soft labels: background, CSF, GM, WM). The same seed gives the same slices.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage

from mrisr.imaging.normalization import robust_scale
from mrisr.simulation.synthetic import deformed_anatomy
from mrisr.training.pool import cache_folder

log = logging.getLogger(__name__)
MAPS = ("t1", "csf", "gm", "wm")
TEMPLATE_MEANS = {"csf": 0.422, "gm": 0.650, "wm": 0.817}  # T1 template means per tissue (mrisr.simulation.synthetic)


@dataclass(frozen=True)
class TissueSlices:
    """A batch: `image` (B, H, W) normalised slices and `target` (B, 4, H, W) class probabilities."""

    image: np.ndarray
    target: np.ndarray


def _subject_path(index: int, validation: bool):
    return cache_folder().parent / "tissue_subjects" / f"{'val' if validation else 'train'}_{index:05d}.npz"


def load_subject(index: int, validation: bool = False) -> np.ndarray:
    """(4, z, y, x) float32 maps t1, csf, gm, wm of deformed subject `index`, cropped to the head's box;
    made once and cached as uint8 under ~/.cache/mrisr/tissue_subjects."""
    path = _subject_path(index, validation)
    if not path.exists():
        log.info("making tissue subject %d (%s)", index, "validation" if validation else "train")
        maps = deformed_anatomy(index, validation)
        stack = np.stack([maps[k] for k in MAPS])
        box = ndimage.find_objects((stack[1:].sum(0) > 0.05).astype(np.uint8))[0]
        box = tuple(slice(max(0, s.start - 12), s.stop + 12) for s in box)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, maps=np.round(np.clip(stack[(slice(None),) + box], 0, 1) * 255).astype(np.uint8))
        os.replace(tmp, path)
    with np.load(path) as data:
        return data["maps"].astype(np.float32) / 255.0


def t1_slice(maps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A T1-like rendering of one (4, H, W) map slice: random tissue means and texture strength."""
    t1, csf, gm, wm = maps
    csf_mean, gm_mean = rng.uniform(0.05, 0.35), rng.uniform(0.40, 0.62)
    wm_mean = rng.uniform(gm_mean + 0.1, min(gm_mean + 0.4, 0.98))
    piecewise = csf * TEMPLATE_MEANS["csf"] + gm * TEMPLATE_MEANS["gm"] + wm * TEMPLATE_MEANS["wm"]
    brain = np.clip(csf + gm + wm, 0, 1)
    texture = (t1 - piecewise) * brain * rng.uniform(0.5, 1.3)
    return csf * csf_mean + gm * gm_mean + wm * wm_mean + texture


def add_head_shell(image: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark CSF/skull layers and a bright textured scalp outside the brain, as in unstripped scans."""
    distance = ndimage.distance_transform_edt(brain < 0.5)
    edges = np.cumsum([rng.uniform(1, 4), rng.uniform(3, 8), rng.uniform(3, 10)])
    levels = [rng.uniform(0.0, 0.15), rng.uniform(0.0, 0.2), rng.uniform(0.6, 1.1)]
    shell = np.zeros_like(image)
    inner = 0.0
    for edge, level in zip(edges, levels):
        shell[(distance > inner) & (distance <= edge)] = level
        inner = edge
    texture = ndimage.gaussian_filter(rng.normal(0, 0.08, image.shape), 1.5)
    outside = (distance > 0) & (distance <= edges[-1])
    return np.where(outside, np.clip(shell + texture, 0, None), image)


def degrade_slice(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bias field, gamma, thick-slice interpolation look or blur, and Rician noise."""
    bias = np.exp(ndimage.zoom(rng.normal(0, 0.15, (4, 4)), np.divide(image.shape, 4), order=3))
    image = np.clip(image * bias, 0, None) ** rng.uniform(0.7, 1.4)
    choice = rng.random()
    if choice < 0.5:
        axis, factor = int(rng.integers(2)), int(rng.integers(2, 9))
        coarse = ndimage.uniform_filter1d(image, factor, axis=axis)
        coarse = np.take(coarse, np.arange(factor // 2, image.shape[axis], factor), axis=axis)
        zoom = [1.0, 1.0]
        zoom[axis] = image.shape[axis] / coarse.shape[axis]
        image = ndimage.zoom(coarse, zoom, order=3, grid_mode=True, mode="nearest")
    elif choice < 0.75:
        image = ndimage.gaussian_filter(image, rng.uniform(0.3, 1.0))
    sigma = rng.uniform(0.005, 0.06)
    return np.hypot(image + rng.normal(0, sigma, image.shape), rng.normal(0, sigma, image.shape))


def normalise_slice(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The pipeline's 0.5–99.5 % foreground scaling (here of the slice), with ±10 % jitter."""
    scale = robust_scale(image, image > 0.1 * image.max())
    return (scale.apply(image) * rng.uniform(0.9, 1.1)).astype(np.float32)


def pad_to(array: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad the last two axes of `array` up to at least `size`, centred."""
    extra = [max(0, size - n) for n in array.shape[-2:]]
    pads = [(0, 0)] * (array.ndim - 2) + [(e // 2, e - e // 2) for e in extra]
    return np.pad(array, pads)


class TissueSlicePool:
    """Random augmented slices (crops of `crop`²) from `count` cached deformed subjects of one split."""

    def __init__(self, count: int, validation: bool = False, crop: int = 128):
        self.count, self.validation, self.crop = count, validation, crop

    @cached_property
    def subjects(self) -> list[np.ndarray]:
        return [load_subject(i, self.validation) for i in range(self.count)]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One (crop, crop) image and its (4, crop, crop) soft target."""
        maps = self.subjects[int(rng.integers(self.count))]
        axis = int(rng.integers(3))
        brain_slices = np.flatnonzero((maps[1:].sum(0) > 0.5).any(axis=tuple(a for a in range(3) if a != axis)))
        index = int(rng.choice(brain_slices))
        plane = np.take(maps, index, axis=axis + 1)
        brain = np.clip(plane[1:].sum(0), 0, 1)
        image = t1_slice(plane, rng)
        if rng.random() < 0.6:
            image = add_head_shell(image, brain, rng)
        image = normalise_slice(degrade_slice(image, rng), rng)
        target = np.concatenate([1 - brain[None], plane[1:]])
        image, target = pad_to(image, self.crop), pad_to(target, self.crop)
        top = [int(rng.integers(0, n - self.crop + 1)) for n in image.shape]
        window = (slice(top[0], top[0] + self.crop), slice(top[1], top[1] + self.crop))
        return image[window], target[(slice(None),) + window]

    def batch(self, rng: np.random.Generator, size: int) -> TissueSlices:
        samples = [self.sample(rng) for _ in range(size)]
        return TissueSlices(np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples]).astype(np.float32))
