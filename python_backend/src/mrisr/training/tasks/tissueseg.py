"""Training recipe of the tissue segmenter: soft-label cross-entropy + soft Dice (CSF, GM, WM) on
augmented T1-like slices of deformed MNI152 anatomies; validated by Dice on held-out subjects."""

from __future__ import annotations

import argparse
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mrisr.errors import InputError
from mrisr.evaluation.metrics import dice
from mrisr.networks.tissue_unet2d import PRESETS, TissueUNet2d
from mrisr.segmentation.tissues import CLASS_NAMES
from mrisr.training.tissue_data import TissueSlicePool, TissueSlices

RECIPE = ("deformed MNI152 2009 anatomies (mrisr.simulation.synthetic.deformed_anatomy: affine + elastic, L-R flips; "
          "held-out validation seeds) rendered as T1-like slices along all three axes (mrisr.training.tissue_data: "
          "random CSF<GM<WM intensities with template texture, synthetic skull/scalp shell, bias field, gamma, "
          "thick-slice interpolation look or blur, Rician noise, robust scaling); targets: the warped "
          "probability maps as soft labels")
VALIDATION_SEED, VALIDATION_SLICES = 4242, 48


def soft_dice_loss(probabilities: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 − mean soft Dice over the tissue classes (channels 1..), summed over the batch."""
    dims = (0, 2, 3)
    overlap = (probabilities[:, 1:] * target[:, 1:]).sum(dims)
    total = probabilities[:, 1:].sum(dims) + target[:, 1:].sum(dims)
    return 1 - ((2 * overlap + eps) / (total + eps)).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft labels plus the soft Dice loss."""
    cross_entropy = -(target * F.log_softmax(logits.float(), dim=1)).sum(1).mean()
    return cross_entropy + soft_dice_loss(logits.float().softmax(1), target)


class TissueSegTask:
    def __init__(self, preset_name: str, batch_size: int, subjects: int, crop: int = 128):
        self.name = f"tissueseg_{preset_name}"
        self.config = PRESETS[preset_name]
        self.batch_size, self.crop = batch_size, crop
        self.pool = TissueSlicePool(subjects, crop=crop)

    @cached_property
    def validation(self) -> TissueSlices:
        pool = TissueSlicePool(2, validation=True, crop=self.crop)
        return pool.batch(np.random.default_rng(VALIDATION_SEED), VALIDATION_SLICES)

    def build_network(self) -> torch.nn.Module:
        return TissueUNet2d(self.config)

    def card(self) -> dict[str, Any]:
        return {"method": "tissueseg", "preset": self.name.split("_", 1)[1], "network": self.config.to_dict(),
                "classes": list(CLASS_NAMES), "data": RECIPE, "subjects": self.pool.count,
                "loss": "soft-label cross-entropy + soft Dice over CSF/GM/WM", "crop": self.crop,
                "batch_size": self.batch_size, "input": "one slice scaled by the 0.5-99.5 % foreground percentiles"}

    def loss(self, network, rng: np.random.Generator, generator: torch.Generator, device: str) -> torch.Tensor:
        batch = self.pool.batch(rng, self.batch_size)
        image = torch.from_numpy(batch.image)[:, None].to(device)
        return segmentation_loss(network(image), torch.from_numpy(batch.target).to(device))

    def validate(self, network, device: str) -> dict[str, float]:
        with torch.no_grad():
            logits = network(torch.from_numpy(self.validation.image)[:, None].to(device))
        prediction = logits.argmax(1).cpu().numpy()
        reference = self.validation.target.argmax(1)
        scores = dice(prediction, reference, list(range(1, self.config.classes)))
        return {f"dice_{name}": scores[label] for label, name in zip(range(1, 4), ("csf", "gm", "wm"))}


def make_task(preset_name: str, args: argparse.Namespace) -> TissueSegTask:
    if preset_name not in PRESETS:
        raise InputError(f"tissueseg has no {preset_name!r} preset: use one of {', '.join(PRESETS)}")
    return TissueSegTask(preset_name, args.batch_size or 16, args.pairs)
