"""Shared data and validation of the 2D slice methods' training tasks (Res-SRDiff, SR3 + PDM, DiffMSR)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np
import torch

from mrisr.evaluation.metrics import psnr
from mrisr.training.pool import PairArrays, PairPool

VALIDATION_SEED = 777
RECIPE = ("synthetic pairs from the MNI152 2009 template (mrisr.simulation.synthetic): affine + elastic deformation, "
          "L-R flips, random T1/T2/PD-like tissue contrast, bias field, random low-field degradation "
          "(thick slices 3-8 mm except 5 mm, gap 0-2 mm, any axis, k-space x1-2, contrast, Rician SNR 10-40); "
          "2D crops of slices along all three axes; validation on held-out seeds and 5 mm slices")


@dataclass
class SliceData:
    """Random training crops and one fixed validation set of slice crops, as (B, 1, H, W) tensors."""

    pairs: int
    batch_size: int
    crop: int
    validation_pairs: int = 4
    validation_slices: int = 16

    @cached_property
    def pool(self) -> PairPool:
        return PairPool(self.pairs)

    @cached_property
    def validation(self) -> PairArrays:
        pool = PairPool(self.validation_pairs, validation=True)
        return pool.random_slices(np.random.default_rng(VALIDATION_SEED), self.validation_slices, (self.crop, self.crop))

    def batch(self, rng: np.random.Generator, device: str) -> dict[str, torch.Tensor]:
        """hr, condition, reference (normalised ~[0, 1]) and mask of `batch_size` random crops."""
        crops = self.pool.random_slices(rng, self.batch_size, (self.crop, self.crop))
        return as_tensors(crops, device)


def as_tensors(crops: PairArrays, device: str) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(getattr(crops, k), dtype=np.float32))[:, None].to(device)
            for k in ("hr", "condition", "reference", "mask")}


def validate_slices(predict: Callable[[dict[str, torch.Tensor]], torch.Tensor], data: SliceData,
                    device: str) -> dict[str, float]:
    """PSNR (inside the foreground, data range 1) of the model and of the B-spline condition on the
    fixed validation crops; `predict` maps the batch dict to normalised (B, 1, H, W) predictions."""
    batch = as_tensors(data.validation, device)
    with torch.no_grad():
        prediction = predict(batch).float().cpu().numpy()
    hr, condition = batch["hr"].cpu().numpy(), batch["condition"].cpu().numpy()
    mask = batch["mask"].cpu().numpy() > 0.5
    return {"psnr": psnr(prediction, hr, 1.0, mask), "psnr_bspline": psnr(condition, hr, 1.0, mask)}
