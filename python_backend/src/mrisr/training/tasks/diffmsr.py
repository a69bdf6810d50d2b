"""Training recipe of DiffMSR: two runs, stage 1 (Eq. 5) then stage 2 (Eq. 10), on random slice crops.

Stage 1 (`--stage 1`, card "diffmsr_<preset>_stage1") trains prior extraction (PE) and the PLWformer
with Z = PE(I_HR, I_LR). Stage 2 (`--stage 2 --init <stage-1 card or run folder>`, card
"diffmsr_<preset>", the one the method loads) starts from the stage-1 weights, keeps PE frozen and
trains condition extraction, the latent denoiser and the PLWformer through the whole T = 4 reverse
chain. Each stage is an ordinary resumable `Trainer` run in its own folder with its own warm-up,
cosine schedule and EMA (the EMA is reset to the weights during warm-up), as the paper trains the
two stages one after the other; rerunning a stage's command resumes it from its checkpoint.

The network the trainer optimises is `LossNetwork`, a `DiffMSRNetwork` whose forward is the stage's
loss, so DistributedDataParallel sees one forward per step; its state dict is the plain network's.
The parts a stage does not train are frozen (requires_grad off), so DDP waits for no gradient of
theirs and their weights pass through the stage unchanged (stage 1: CE and the denoiser; stage 2: PE).

Data-consistency term (L_dc, λ₂ = 0.001): `kspace_dc_loss` compares the output with the HR target
outside the band an acquisition measured; it never uses the LR itself (during training the measured
bins would equal the target's). The pool's pairs are mostly thick-slice acquisitions in a random
orientation, cut into crops along random axes, and the pool keeps neither the LR grid nor the
thick axis, so no exact measured band exists for a crop: a thick-slice profile attenuates, rather
than removes, frequencies, and a crop may lie in the acquired plane. We therefore use one nominal
band, the central 1/`DC_FACTOR` of each in-plane axis (lr_shape = crop / 2), which every training
degradation (3–8 mm slices, k-space ×1–2) measures at most approximately: L_dc here is an L2 penalty
on the output's error at the high frequencies the LR does not determine. It is an honest stand-in,
not the paper's exact term. At inference the method applies hard k-space DC with the real LR
acquisition where that is an in-plane k-space truncation (`methods/diffmsr.py`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrisr.diffusion.latent_ddpm import LatentDiffusionConfig, sample_prior
from mrisr.errors import InputError
from mrisr.io.model_store import load_state_dict
from mrisr.networks.diffmsr import DiffMSRConfig, DiffMSRNetwork, preset
from mrisr.training.diffmsr_losses import LossWeights, stage1_loss, stage2_loss
from mrisr.training.tasks.slices import RECIPE, SliceData, validate_slices

DC_FACTOR = 2  # nominal k-space band of L_dc: the central 1/2 of each in-plane axis (see above)
STAGES = (1, 2)
FROZEN = {1: ("condition_extractor", "denoiser"), 2: ("prior_extractor",)}  # parts a stage does not train


class LossNetwork(DiffMSRNetwork):
    """DiffMSRNetwork whose forward returns one training stage's loss (same parameters and state dict)."""

    def forward(self, batch: dict[str, torch.Tensor], stage: int, lr_shape: tuple[int, int],
                generator: torch.Generator, diffusion: LatentDiffusionConfig, weights: LossWeights) -> torch.Tensor:
        """batch: "target", "condition", "reference" (B, 1, H, W) → the scalar loss of Eq. 5 or Eq. 10."""
        if stage == 1:
            return stage1_loss(self, batch, lr_shape, weights)[0]
        return stage2_loss(self, batch, lr_shape, generator, diffusion, weights)[0]


def _init_card(init: str | None, name: str) -> dict[str, Any]:
    """The stage-1 model card named by --init: a card JSON file, or the run folder holding `name`.json."""
    if not init:
        raise InputError("DiffMSR stage 2 needs --init: the stage-1 card (or its run folder) to start from")
    path = Path(init).expanduser()
    path = path / f"{name}.json" if path.is_dir() else path
    if not path.is_file():
        raise InputError(f"--init {init!r} is invalid: {path} is not a stage-1 model card")
    card = json.loads(path.read_text(encoding="utf-8"))
    card["_folder"] = str(path.parent)
    return card


class DiffMSRTask:
    """One stage of DiffMSR training for one preset (with or without the reference contrast)."""

    def __init__(self, preset_name: str, batch_size: int, pairs: int, stage: int = 1, init: str | None = None,
                 crop: int = 128, with_reference: bool = True):
        if stage not in STAGES:
            raise InputError(f"DiffMSR --stage {stage!r} is invalid: use 1 (Eq. 5) or 2 (Eq. 10)")
        config = preset(preset_name)
        self.config: DiffMSRConfig = config if with_reference else config.without_reference()
        method = "diffmsr" if with_reference else "diffmsr_noref"
        self.preset, self.stage, self.init, self.init_sha256 = preset_name, stage, init, None
        self.stage1_name = f"{method}_{preset_name}_stage1"
        self.name = self.stage1_name if stage == 1 else f"{method}_{preset_name}"
        self.method = method.replace("_", "-")
        self.diffusion, self.weights = LatentDiffusionConfig(), LossWeights()
        if crop % self.config.pad_multiple:
            raise InputError(f"crop {crop} is invalid: must be a multiple of {self.config.pad_multiple}")
        self.lr_shape = (crop // DC_FACTOR, crop // DC_FACTOR)
        self.data = SliceData(pairs=pairs, batch_size=batch_size, crop=crop)

    def build_network(self) -> LossNetwork:
        """The network, with the parts this stage does not train frozen (so DDP does not wait for their
        gradients); stage 2 starts from the stage-1 weights named by --init."""
        network = LossNetwork(self.config)
        for name, parameter in network.named_parameters():
            parameter.requires_grad_(not name.startswith(FROZEN[self.stage]))
        if self.stage == 2:
            card = _init_card(self.init, self.stage1_name)
            if DiffMSRConfig.from_dict(card["network"]) != self.config or card.get("stage") != 1:
                raise InputError(f"--init card {card.get('name')!r} is not a stage-1 {self.method} {self.preset} "
                                 f"model: its stage or network config differs")
            network.load_state_dict(load_state_dict(card))
            self.init_sha256 = card["sha256"]
        return network

    def card(self) -> dict[str, Any]:
        losses = {1: "Eq. 5: L1 image + 0.001 L_dc, prior Z = PE(HR, LR)",
                  2: "Eq. 10: L1 image + 0.001 L_dc + L1(Z_hat, Z) through the full T-step reverse chain, PE frozen"}
        return {"method": self.method, "preset": self.preset, "stage": self.stage,
                "network": self.config.to_dict(), "diffusion": asdict(self.diffusion),
                "loss_weights": asdict(self.weights), "data": RECIPE, "loss": losses[self.stage],
                "dc_term": f"nominal band: central 1/{DC_FACTOR} of each in-plane axis of the crop",
                "initialised_from": None if self.stage == 1 else {"card": str(self.init), "sha256": self.init_sha256},
                "crop": self.data.crop, "batch_size": self.data.batch_size}

    def _batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {"target": batch["hr"], "condition": batch["condition"]}
        if self.config.decoder.use_reference:
            out["reference"] = batch["reference"]
        return out

    def loss(self, network, rng: np.random.Generator, generator: torch.Generator, device: str) -> torch.Tensor:
        batch = self._batch(self.data.batch(rng, device))
        return network(batch, self.stage, self.lr_shape, generator, self.diffusion, self.weights)

    def validate(self, network: DiffMSRNetwork, device: str) -> dict[str, float]:
        """PSNR of the inference path (CE → T-step latent chain, seeded per slice → PLWformer) and of the
        decoder with the prior Z = PE(HR, LR) it is trained with in stage 1 ("psnr_pe_prior")."""
        def sampled(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            inputs = self._batch(batch)
            generators = [torch.Generator(device=device).manual_seed(i) for i in range(batch["hr"].shape[0])]
            prior = sample_prior(network, network.extract_condition(inputs["condition"]), self.diffusion,
                                 self.diffusion.num_train_steps, generators)
            return network.decode(inputs["condition"], inputs.get("reference"), prior)

        def oracle(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            inputs = self._batch(batch)
            prior = network.extract_prior(inputs["target"], inputs["condition"])
            return network.decode(inputs["condition"], inputs.get("reference"), prior)

        metrics = validate_slices(sampled, self.data, device)
        metrics["psnr_pe_prior"] = validate_slices(oracle, self.data, device)["psnr"]
        return metrics


def make_task(preset_name: str, args: argparse.Namespace, with_reference: bool = True) -> DiffMSRTask:
    return DiffMSRTask(preset_name, args.batch_size or 4, args.pairs, stage=getattr(args, "stage", None) or 1,
                       init=getattr(args, "init", None), with_reference=with_reference)
