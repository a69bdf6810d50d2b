"""Label-driven synthetic subjects (the SynthSR idea): anatomy from real subjects' label maps, contrast,
resolution and acquisition drawn at random, so a model sees many anatomies, contrasts and voxel sizes
instead of one template.

A subject is built from a FreeSurfer-numbered label map (1 mm):
- a skull/scalp shell is added outside the brain, which the label maps lack (extra-cerebral CSF, skull,
  scalp), with random widths;
- each label gets a random mean from a contrast family (T1-, T2-, PD-, FLAIR-like, or fully random),
  plus smooth within-label texture (a Gaussian-mixture draw per label);
- partial-volume blur, an affine + elastic deformation and a left-right flip, a smooth bias field;
- resampling onto a random isotropic voxel size of 0.7–2 mm.
The result is an HR target; `mrisr.training.volume_folder` then simulates its low-field acquisition.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from mrisr.errors import InputError
from mrisr.imaging.geometry import Grid
from mrisr.imaging.registration import resample_through
from mrisr.io.atomic import atomic_output
from mrisr.progress import ProgressCallback, ProgressEvent, no_progress
from mrisr.simulation.synthetic import spatial_transform

# FreeSurferColorLUT numbers grouped by tissue class (left and right hemisphere numbers both listed).
TISSUE_CLASSES = {
    "wm": (2, 41, 7, 46, 16, 28, 60, 77, 85),
    "gm": (3, 42, 8, 47, 17, 53, 18, 54, 26, 58, 29, 80),
    "deep": (10, 49, 11, 50, 12, 51, 13, 52),
    "csf": (4, 43, 5, 44, 14, 15, 24, 72),
    "plexus": (31, 63),
}
SHELL_LABELS = {"outer_csf": 1001, "skull": 1002, "scalp": 1003}
# Mean intensity ranges (fraction of the maximum) of each class per contrast family.
FAMILIES = {
    "t1": {"wm": (0.70, 0.90), "gm": (0.45, 0.60), "deep": (0.55, 0.75), "csf": (0.05, 0.25), "plexus": (0.3, 0.6),
           "outer_csf": (0.05, 0.25), "skull": (0.02, 0.20), "scalp": (0.60, 1.00)},
    "t2": {"wm": (0.25, 0.42), "gm": (0.45, 0.62), "deep": (0.35, 0.55), "csf": (0.80, 1.00), "plexus": (0.5, 0.8),
           "outer_csf": (0.80, 1.00), "skull": (0.02, 0.20), "scalp": (0.40, 0.90)},
    "pd": {"wm": (0.45, 0.58), "gm": (0.60, 0.75), "deep": (0.55, 0.70), "csf": (0.65, 0.85), "plexus": (0.5, 0.8),
           "outer_csf": (0.65, 0.85), "skull": (0.05, 0.25), "scalp": (0.60, 0.95)},
    "flair": {"wm": (0.40, 0.55), "gm": (0.55, 0.72), "deep": (0.45, 0.65), "csf": (0.02, 0.15),
              "plexus": (0.2, 0.5), "outer_csf": (0.02, 0.15), "skull": (0.02, 0.20), "scalp": (0.50, 0.95)},
}
RANDOM_FAMILY = "random"  # every label and shell an independent U(0, 1) mean
HR_SPACING_MM = (0.7, 2.0)


@dataclass(frozen=True)
class SubjectRecipe:
    """What was drawn for one synthetic subject (kept in its folder, for the model card's data section)."""

    source: str
    family: str
    spacing_mm: float
    seed: int


def class_of(label: int) -> str:
    """The tissue class of a FreeSurfer label number, or of one of the added shell labels."""
    for name, numbers in TISSUE_CLASSES.items():
        if label in numbers:
            return name
    for name, number in SHELL_LABELS.items():
        if label == number:
            return name
    return "gm"  # a label we do not know: grey-matter-like


def add_head_shell(labels: np.ndarray, rng: np.random.Generator, pad: int = 20) -> np.ndarray:
    """The label map padded by `pad` voxels, its unlabelled voxels inside the head (sulci) made CSF, and
    shells outside the brain: extra-cerebral CSF (1–3 mm), skull (3–7 mm) and scalp (3–7 mm), each width
    random, measured by distance from the brain."""
    padded = np.pad(labels, pad)
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(padded > 0, iterations=3))
    distance = ndimage.distance_transform_edt(~brain)
    edges = np.cumsum([rng.uniform(1, 3), rng.uniform(3, 7), rng.uniform(3, 7)])
    out = padded.astype(np.int32)
    out[brain & (out == 0)] = SHELL_LABELS["outer_csf"]  # sulci and cisterns: unlabelled CSF inside the head
    for (name, number), low, high in zip(SHELL_LABELS.items(), np.r_[0.0, edges[:-1]], edges):
        out[(distance > low) & (distance <= high) & (out == 0)] = number
    return out


def draw_intensities(labels: np.ndarray, family: str, rng: np.random.Generator) -> np.ndarray:
    """A float32 volume: per label, a mean from `family` and a smooth texture of random strength."""
    if family != RANDOM_FAMILY and family not in FAMILIES:
        raise InputError(f"contrast family {family!r} is unknown: use one of {', '.join(FAMILIES)}, {RANDOM_FAMILY}")
    texture = ndimage.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32), 1.0) * 2.5
    volume = np.zeros(labels.shape, np.float32)
    for label in np.unique(labels):
        if label == 0:
            continue
        low, high = (0.0, 1.0) if family == RANDOM_FAMILY else FAMILIES[family][class_of(int(label))]
        mean, spread = rng.uniform(low, high), rng.uniform(0.01, 0.05)
        inside = labels == label
        volume[inside] = mean + spread * texture[inside]
    return np.clip(volume, 0.0, None)


def smooth_bias(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A multiplicative bias field exp(smooth Gaussian), standard deviation 0.1–0.3 in log space."""
    coarse = rng.normal(0, rng.uniform(0.1, 0.3), (4, 4, 4))
    return np.exp(ndimage.zoom(coarse, np.divide(shape, 4), order=3)).astype(np.float32)


def synthesize_subject(labels: np.ndarray, seed: int, family: str | None = None,
                       spacing_mm: float | None = None) -> tuple[sitk.Image, SubjectRecipe]:
    """One synthetic HR subject from a 1 mm (z, y, x) label map; the same seed gives the same subject."""
    rng = np.random.default_rng([seed, 91])
    family = family or str(rng.choice([*FAMILIES, RANDOM_FAMILY], p=[0.3, 0.2, 0.15, 0.15, 0.2]))
    spacing = float(spacing_mm or rng.uniform(*HR_SPACING_MM))
    shelled = add_head_shell(labels, rng)
    volume = draw_intensities(shelled, family, rng)
    volume = ndimage.gaussian_filter(volume, rng.uniform(0.3, 0.8)) * smooth_bias(volume.shape, rng)
    grid = Grid(size=tuple(int(n) for n in volume.shape[::-1]), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                direction=tuple(np.eye(3).ravel()))
    warped = resample_through(grid.image_from_array(volume), spatial_transform(grid, rng, 1.0), grid, sitk.sitkLinear)
    if rng.random() < 0.5:
        warped = warped[..., ::-1]
    image = grid.image_from_array(np.ascontiguousarray(warped / max(float(warped.max()), 1e-6), dtype=np.float32))
    if spacing > 1.0:  # anti-alias before coarser sampling
        image = sitk.SmoothingRecursiveGaussian(image, 0.4 * spacing)
    size = [max(8, int(round(n / spacing))) for n in image.GetSize()]
    target = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), (spacing,) * 3,
                           image.GetDirection(), 0.0, sitk.sitkFloat32)
    target = sitk.Clamp(target, sitk.sitkFloat32, 0.0, 1.0)  # the recursive Gaussian rings slightly below 0
    return target, SubjectRecipe("", family, round(spacing, 3), seed)


def mni_label_map() -> np.ndarray:
    """The MNI152 template's tissue labels (argmax of its CSF/GM/WM maps, 1 mm) in FreeSurfer numbers:
    CSF 24, cortex-like grey matter 3, white matter 2 (needs the `eval` extra, nilearn)."""
    from mrisr.segmentation.tissues import template_labels

    return np.array([0, 24, 3, 2], dtype=np.int32)[template_labels()]


def label_maps(folder: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """(name, (z, y, x) int label array) of every *labels*.nii.gz / .mgz / .nrrd in `folder`, sorted."""
    paths = sorted(p for p in Path(folder).expanduser().iterdir() if "label" in p.name or p.name.startswith("aseg"))
    if not paths:
        raise InputError(f"{folder} holds no label maps (*labels*.nii.gz or aseg.mgz): point --labels at them")
    for path in paths:
        image = sitk.ReadImage(str(path))
        if any(abs(s - 1.0) > 0.05 for s in image.GetSpacing()):
            image = sitk.Resample(image, [int(round(n * s)) for n, s in zip(image.GetSize(), image.GetSpacing())],
                                  sitk.Transform(), sitk.sitkNearestNeighbor, image.GetOrigin(), (1.0,) * 3,
                                  image.GetDirection(), 0, image.GetPixelID())
        yield path.name.split(".")[0], sitk.GetArrayFromImage(image).astype(np.int32)


def write_subject_folder(labels_folder: str | os.PathLike, out: str | os.PathLike, count: int,
                         validation_maps: int = 1, seed: int = 0, include_mni: bool = False,
                         progress: ProgressCallback = no_progress) -> list[SubjectRecipe]:
    """Write `count` synthetic subjects as OUT/train/<subject>/target.nii.gz for `mrisr train --data OUT`,
    cycling over the label maps (and the MNI152 template's, first, with `include_mni`); the last
    `validation_maps` maps only ever make OUT/validation/ subjects, so validation anatomy is never trained on."""
    if validation_maps < 1:
        raise InputError(f"--validation-maps {validation_maps} is invalid: validation needs at least one label map "
                         "of its own")
    maps = ([("mni152", mni_label_map())] if include_mni else []) + list(label_maps(labels_folder))
    if len(maps) <= validation_maps:
        raise InputError(f"{labels_folder} has {len(maps)} label maps: need more than {validation_maps} to hold "
                         "some out for validation")
    train, held_out = maps[:-validation_maps], maps[-validation_maps:]
    recipes: list[SubjectRecipe] = []
    validation_count = max(2, validation_maps)
    for split, sources, total in (("train", train, count), ("validation", held_out, validation_count)):
        for index in range(total):
            name, labels = sources[index % len(sources)]
            subject_seed = seed * 100_000 + index + (50_000 if split == "validation" else 0)
            image, recipe = synthesize_subject(labels, subject_seed)
            recipe = SubjectRecipe(name, recipe.family, recipe.spacing_mm, subject_seed)
            folder = Path(out) / split / f"{name}_{index:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_output(folder / "target.nii.gz", suffix=".nii.gz") as temporary:
                sitk.WriteImage(image, str(temporary), True)
            recipes.append(recipe)
            progress(ProgressEvent("synthesize", len(recipes), count + validation_count, folder.name))
    with atomic_output(Path(out) / "subjects.json") as temporary:  # what was drawn, for the model card
        Path(temporary).write_text(json.dumps([asdict(r) for r in recipes], indent=1), encoding="utf-8")
    return recipes
