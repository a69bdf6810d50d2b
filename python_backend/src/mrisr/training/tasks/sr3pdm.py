"""Training recipe of SR3 + PDM: partial diffusion (K = 25 of T = 100) with latent alignment (Eq. 16-19),
L1 on ε, on random slice crops; validated with 5 DDIM steps from K."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from mrisr.diffusion import pdm
from mrisr.diffusion.intensity import from_model_range, to_model_range
from mrisr.diffusion.noise import randn
from mrisr.networks.sr3_unet2d import PRESETS, SR3UNet2d
from mrisr.training.tasks.slices import RECIPE, SliceData, validate_slices

T_TRAIN, START_STEP, VALIDATION_STEPS, CLIP = 100, 25, 5, 1.5


class SR3PDMTask:
    def __init__(self, preset_name: str, batch_size: int, pairs: int, crop: int = 96):
        self.name = f"sr3pdm_{preset_name}"
        self.config = PRESETS[preset_name]
        self.schedule = pdm.sr3_schedule(T_TRAIN, "linear")
        self.data = SliceData(pairs=pairs, batch_size=batch_size, crop=crop)

    def build_network(self) -> torch.nn.Module:
        return SR3UNet2d(self.config)

    def card(self) -> dict[str, Any]:
        diffusion = {"T_train": T_TRAIN, "beta_schedule": "linear", "latent_alignment": True,
                     "trained_start_step": START_STEP, "alignment_schedule": "cosine"}
        return {"method": "sr3pdm", "preset": self.name.split("_", 1)[1], "network": self.config.to_dict(),
                "diffusion": diffusion, "data": RECIPE, "loss": "L1 on the latent-aligned ε (Eq. 16-19)",
                "crop": self.data.crop, "batch_size": self.data.batch_size}

    def loss(self, network, rng: np.random.Generator, generator: torch.Generator, device: str) -> torch.Tensor:
        batch = self.data.batch(rng, device)
        x, y = to_model_range(batch["hr"]), to_model_range(batch["condition"])
        return pdm.training_loss(network, x, y, self.schedule, generator, start_step=START_STEP, align=True,
                                 prediction=self.config.prediction)

    def validate(self, network, device: str) -> dict[str, float]:
        def predict(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            y = to_model_range(batch["condition"])
            generator = torch.Generator(device=device).manual_seed(0)
            denoise = pdm.denoiser(network, y, self.schedule, clip=CLIP)
            out = pdm.sample(denoise, y, self.schedule, randn(y.shape, generator, device), START_STEP,
                             VALIDATION_STEPS, eta=0.0, generator=generator)
            return from_model_range(out)

        return validate_slices(predict, self.data, device)


def make_task(preset_name: str, args: argparse.Namespace) -> SR3PDMTask:
    return SR3PDMTask(preset_name, args.batch_size or 8, args.pairs)
