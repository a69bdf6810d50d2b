"""Training recipe of Res-SRDiff: Eq. 13 (λ = 10 MSE + LPIPS-Alex) on random slice crops."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrisr.diffusion.intensity import to_model_range
from mrisr.errors import InputError
from mrisr.io.model_store import load_card, load_state_dict
from mrisr.diffusion.resshift import ResShiftSchedule, training_loss
from mrisr.methods.ressrdiff import slice_model
from mrisr.networks.swin_unet2d import SwinUNet2d, preset
from mrisr.evaluation.perceptual import lpips_alex
from mrisr.training.tasks.slices import RECIPE, SliceData, validate_slices


class ResSRDiffTask:
    def __init__(self, preset_name: str, batch_size: int, pairs: int, crop: int = 96, init: str | None = None):
        self.name = f"ressrdiff_{preset_name}"
        self.config = preset(preset_name)
        self.schedule = ResShiftSchedule()
        self.data = SliceData(pairs=pairs, batch_size=batch_size, crop=crop)
        self.init, self.init_sha256 = init, None
        self._perceptual: dict[str, Any] = {}

    def build_network(self) -> torch.nn.Module:
        """The network; with --init, starting from that card's weights (e.g. the shipped ones, to fine-tune
        on another data distribution)."""
        network = SwinUNet2d(self.config)
        if self.init:
            card = init_card(self.init)
            if card.get("method") != "ressrdiff" or card.get("network") != json.loads(json.dumps(asdict(self.config))):
                raise InputError(f"--init {self.init!r} is not a Res-SRDiff {self.name.split('_', 1)[1]} model card")
            network.load_state_dict(load_state_dict(card))
            self.init_sha256 = card["sha256"]
        return network

    def card(self) -> dict[str, Any]:
        return {"method": "ressrdiff", "preset": self.name.split("_", 1)[1], "network": asdict(self.config),
                "diffusion": asdict(self.schedule), "data": RECIPE,
                "loss": "10 * MSE + LPIPS-Alex (Eq. 13)", "crop": self.data.crop, "batch_size": self.data.batch_size,
                "initialised_from": self.init and {"card": str(self.init), "sha256": self.init_sha256}}

    def _lpips(self, device: str):
        if device not in self._perceptual:
            self._perceptual[device] = lpips_alex(device).requires_grad_(False)
        return self._perceptual[device]

    def loss(self, network, rng: np.random.Generator, generator: torch.Generator, device: str) -> torch.Tensor:
        batch = self.data.batch(rng, device)
        x, y = to_model_range(batch["hr"]), to_model_range(batch["condition"])
        return training_loss(network, x, y, generator, schedule=self.schedule, perceptual=self._lpips(device))

    def validate(self, network, device: str) -> dict[str, float]:
        """PSNR of the inference path: the method's slice model with all T steps, slice i seeded with i."""
        model = slice_model(network, self.schedule, self.schedule.num_steps, device)

        def predict(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            stack = batch["condition"][:, 0].cpu().numpy()
            return torch.from_numpy(model(stack, None, list(range(len(stack)))))[:, None]

        return validate_slices(predict, self.data, device)


def init_card(init: str) -> dict[str, Any]:
    """The card --init names: a card JSON file, a run folder holding one, or an installed card's name."""
    path = Path(init).expanduser()
    if path.is_dir():
        path = path / "ressrdiff_cpu.json"
    if not path.is_file():
        return load_card(init)
    card = json.loads(path.read_text(encoding="utf-8"))
    card["_folder"] = str(path.parent)
    return card


def make_task(preset_name: str, args: argparse.Namespace) -> ResSRDiffTask:
    return ResSRDiffTask(preset_name, args.batch_size or 8, args.pairs, init=getattr(args, "init", None))
