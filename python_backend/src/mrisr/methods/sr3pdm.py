"""SR3 with partial diffusion and latent alignment (PDM), applied slice-wise to a volume.

Pipeline: LR → B-spline onto the output grid (the condition y) → one affine map of the whole volume to
the model range [−1, 1] → 2D slices along the chosen planes (`enhance_slicewise`, multi-plane fusion by
averaging) → per slice batch: x_K^LR from per-slice seeded noise, K (or fewer, DDIM) reverse steps →
back to [0, 1]. Defaults as the PDM paper's SR3 setting: T = 100, K = 25 (§V-A.3).

Model card (`config.card`, written by training): "network" = `SR3UNet2dConfig.to_dict()`, and "diffusion" =
{"T_train": 100, "beta_schedule": "linear" | "cosine", "latent_alignment": bool, "trained_start_step": K,
"alignment_schedule": "cosine" | "linear"}. A card without "latent_alignment": true gets a warning when
run with K < T; an injected network is described by the same keys in the registry config.
Every slice has its own generator for x_K and for the ancestral noise of η > 0 steps, so results do not
depend on the batch size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from mrisr.diffusion import ddpm, pdm
from mrisr.diffusion.intensity import from_model_range, to_model_range
from mrisr.diffusion.noise import randn
from mrisr.errors import InputError
from mrisr.imaging.geometry import resample
from mrisr.inference.slicewise import SlicePlan, default_axes, enhance_slicewise
from mrisr.networks.sr3_unet2d import SR3UNet2d, build
from mrisr.progress import CancelToken, ProgressCallback, ProgressEvent
from mrisr.registry import MethodSpec
from mrisr.methods import MethodInput
from mrisr.methods.learned import autocast_dtype, card_for, generator_for, load_network

log = logging.getLogger(__name__)

TRAINING_KEYS = ("T_train", "beta_schedule", "latent_alignment", "trained_start_step", "alignment_schedule")
"""How the model was trained: the model card's "diffusion" block (for an injected network: spec.config)."""


@dataclass(frozen=True)
class SamplingPlan:
    """One run's diffusion settings: start step K, number of steps, η, x̂₀ clipping, device."""

    start_step: int
    steps: int
    eta: float
    clip: float | None
    device: str


def check_steps(steps: int, start_step: int, num_train_steps: int) -> None:
    """steps ≤ K ≤ T, else an InputError naming the values and the rule."""
    if not 1 <= start_step <= num_train_steps:
        raise InputError(f"start step {start_step} is out of range: "
                         f"use --start-step 1..{num_train_steps} (T of the model)")
    if not 1 <= steps <= start_step:
        raise InputError(f"steps {steps} exceeds start step {start_step}: use --steps 1..{start_step} "
                         f"(denoising steps within the partial diffusion from step K)")


def training_warning(training: dict[str, Any], start_step: int) -> str | None:
    """Why the model does not match this run's partial diffusion, or None when it does (§IV-B/C)."""
    total = int(training.get("T_train", start_step))
    trained = training.get("trained_start_step")
    if trained is not None and start_step > int(trained):
        return (f"the model was trained on steps 1..{trained} only but runs from K = {start_step}: "
                f"it never saw those noise levels")
    if start_step < total and not training.get("latent_alignment", False):
        return (f"partial diffusion from K = {start_step} of T = {total} with a model not trained with latent "
                f"alignment: x_K^HR is approximated by x_K^LR without alignment (PDM §IV-B); expect lower "
                f"quality, the more so the smaller K")
    if training.get("latent_alignment") and trained is not None and int(trained) != start_step:
        return (f"the model was trained with latent alignment for K = {trained} but runs with K = {start_step}: "
                f"its λ_t trajectory (Eq. 17) differs from this run's")
    return None


class SliceSampler:
    """The slice model handed to `enhance_slicewise`: (B, H, W) conditions → (B, H, W) samples."""

    def __init__(self, network: SR3UNet2d, schedule: ddpm.DiscreteSchedule, plan: SamplingPlan,
                 progress: ProgressCallback, cancel: CancelToken):
        self.network, self.schedule, self.plan = network, schedule, plan
        self.progress, self.cancel = progress, cancel

    def _step(self, done: int, total: int) -> None:
        self.progress(ProgressEvent("denoise", done, total, f"step {done}/{total} of this slice batch"))
        self.cancel.check()

    def __call__(self, stack: np.ndarray, reference: np.ndarray | None, seeds: Sequence[int]) -> np.ndarray:
        plan, device = self.plan, self.plan.device
        y = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[:, None].to(device)
        generators = [generator_for(device, s) for s in seeds]
        noise = randn(y.shape, generators, device)
        denoise = pdm.denoiser(self.network, y, self.schedule, clip=plan.clip, autocast_dtype=autocast_dtype(device))
        with torch.inference_mode():
            x = pdm.sample(denoise, y, self.schedule, noise, plan.start_step, plan.steps, eta=plan.eta,
                           generator=generators, callback=self._step)
        return x[:, 0].float().cpu().numpy()


class SR3PDMMethod:
    """SR3 + PDM on 2D slices; `network` injects a (e.g. random-init) network instead of the model card's."""

    def __init__(self, spec: MethodSpec, network: SR3UNet2d | None = None):
        self.spec = spec
        self._network = network
        self._training: dict[str, Any] = {k: spec.config[k] for k in TRAINING_KEYS if k in spec.config}

    def _load(self, device: str) -> SR3UNet2d:
        if self._network is None:
            card = card_for(self.spec)
            self._training = dict(card.get("diffusion", {}))
            self._network = load_network(card, build, device)
        return self._network.to(device).eval()

    def sampling_plan(self, inputs: MethodInput) -> SamplingPlan:
        """K, steps and η for this run, checked against the model's T (DDIM η when steps < K)."""
        settings, config = inputs.settings, self.spec.config
        start = settings.start_step or self.spec.start_step.default
        steps = settings.steps or min(self.spec.steps.default, start)
        check_steps(steps, start, int(self._training.get("T_train", config["T_train"])))
        eta = 1.0 if steps == start else float(config.get("ddim_eta", 0.0))
        return SamplingPlan(start, steps, eta, config.get("clip_x0"), settings.device)

    def run(self, inputs: MethodInput, progress: ProgressCallback, cancel: CancelToken) -> np.ndarray:
        settings, config = inputs.settings, self.spec.config
        self.sampling_plan(inputs)  # reject bad steps before loading weights
        network = self._load(settings.device)
        plan = self.sampling_plan(inputs)
        warning = training_warning(self._training, plan.start_step)
        if warning:
            log.warning(warning)
        schedule = pdm.sr3_schedule(int(self._training.get("T_train", config["T_train"])),
                                    self._training.get("beta_schedule", config.get("beta_schedule", "linear")))
        condition = to_model_range(sitk.GetArrayFromImage(resample(inputs.lr, inputs.grid, "bspline")))
        axes = settings.slice_axes or default_axes(inputs.lr.GetSpacing(), inputs.grid.spacing)
        slices = SlicePlan(tuple(axes), settings.batch_size or int(config.get("batch_size", 8)),
                           network.config.pad_multiple)
        log.info("SR3+PDM: K = %d, %d steps, η = %.2f, slice axes %s", plan.start_step, plan.steps, plan.eta, axes)
        sampler = SliceSampler(network, schedule, plan, progress, cancel)
        output = enhance_slicewise(sampler, condition, slices, inputs.mask, None, settings.seed, progress, cancel)
        return from_model_range(output)
