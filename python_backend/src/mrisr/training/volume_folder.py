"""Training pairs from a folder of the user's own HR volumes (e.g. HCP-sized data on a GPU cluster):
each subject's HR target is degraded by the same random low-field simulator as the synthetic pairs.

Layout: DIR/train/<subject>/target.<ext> and DIR/validation/<subject>/target.<ext> (any format
`read_volume` reads), each with an optional reference.<ext>, a second contrast on the same grid (DiffMSR);
without one the target stands in for it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from mrisr.errors import InputError
from mrisr.imaging.geometry import Grid, resample
from mrisr.imaging.geometry import check_same_grid
from mrisr.simulation.synthetic import SyntheticPair, random_degradation
from mrisr.simulation.degradation import degrade
from mrisr.io.volumes import read_volume

ENVIRONMENT = "MRISR_TRAIN_DATA"  # set by `mrisr train --data DIR`; read in every DDP rank alike


def _volume(folder: Path, stem: str) -> Path | None:
    found = sorted(p for p in folder.iterdir() if p.name.split(".")[0] == stem and p.is_file())
    return found[0] if found else None


class VolumeFolder:
    """The subjects of one split of a training-data folder, turned into degraded pairs on demand."""

    def __init__(self, root: str | os.PathLike, validation: bool = False):
        self.root, self.validation = Path(root).expanduser(), validation
        split = self.root / ("validation" if validation else "train")
        if not split.is_dir():
            raise InputError(f"training data folder {self.root} has no {split.name}/ folder: put one folder "
                             f"per subject, each with target.nii.gz, under {split}")
        self.subjects = [d for d in sorted(split.iterdir()) if d.is_dir() and _volume(d, "target")]
        if not self.subjects:
            raise InputError(f"{split} holds no subject folder with a target volume: add <subject>/target.nii.gz")

    @property
    def cache_name(self) -> str:
        """A pair-cache folder name unique to this data folder."""
        return "pairs_" + hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:12]

    def pair(self, index: int) -> SyntheticPair:
        """Subject `index` (modulo the count) and its deterministic random low-field acquisition."""
        subject = self.subjects[index % len(self.subjects)]
        hr = read_volume(_volume(subject, "target"))
        reference_path = _volume(subject, "reference")
        reference = read_volume(reference_path) if reference_path else hr
        try:
            check_same_grid(reference, hr)
        except InputError:
            raise InputError(f"{reference_path} is not on the grid of its target: resample it onto the target "
                             "first") from None
        config = random_degradation(np.random.default_rng([index, int(self.validation), 23]), self.validation)
        lr = degrade(hr, config)
        return SyntheticPair(hr, lr, resample(lr, Grid.of(hr), "bspline"), reference, "user", config)


MIX_ENVIRONMENT = "MRISR_TRAIN_MIX"  # set by `mrisr train --data DIR --mix-synthetic N`


def configured_mix() -> int:
    """How many built-in synthetic (MNI152) pairs `mrisr train --mix-synthetic` adds to a --data training pool."""
    return int(os.environ.get(MIX_ENVIRONMENT, "0") or 0)


def configured_folder(validation: bool) -> VolumeFolder | None:
    """The folder `mrisr train --data` named, or None for the built-in synthetic pairs."""
    root = os.environ.get(ENVIRONMENT)
    return VolumeFolder(root, validation) if root else None
