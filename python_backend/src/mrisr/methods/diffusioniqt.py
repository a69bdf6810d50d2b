"""DiffusionIQT (Kim et al. 2023): 3D conditional diffusion on blocks of 3×3×3 patches, optionally with
partial diffusion (PDM, Zhao et al. 2024).

Steps T (`--steps`, default 20) divide t ∈ [0, 1] uniformly (Algorithm 2). Start step K
(`--start-step`): 0 is full diffusion from pure noise at t = 1; 1 ≤ K ≤ T is partial diffusion: K
steps of the same T-step grid, starting at t_K = K / T from the diffused condition α_K x_c + σ_K ε
(the default K = 5, T = 20: t_K = 0.25, 4× fewer network evaluations; the shipped weights are trained
for exactly this trajectory). A model trained with
latent alignment (model card field "latent_alignment": {"start_time": t_K}) is sampled on the aligned
trajectory; otherwise PDM runs on a normally trained model (PDM Fig. 3b) with a warning.

Intensities: the pipeline's normalised [0, 1] volume is mapped to [−1, 1] for the diffusion and back.
The condition is the LR volume resampled onto the output grid with a cubic B-spline.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from mrisr.diffusion import vdm
from mrisr.diffusion.intensity import from_model_range, to_model_range
from mrisr.diffusion.noise import randn
from mrisr.diffusion.scheduler import Denoiser, StepCallback, sample
from mrisr.diffusion.vdm import VDMScheduler
from mrisr.errors import InputError
from mrisr.imaging.geometry import resample
from mrisr.inference.patch_denoiser import BlockDenoiser, BlockPlan
from mrisr.networks.iqt_unet3d import IQTUNet3D, IQTUNetConfig
from mrisr.progress import CancelToken, ProgressCallback, ProgressEvent
from mrisr.registry import MethodSpec
from mrisr.methods import MethodInput
from mrisr.methods.learned import autocast_dtype, card_for, generator_for, load_network

log = logging.getLogger(__name__)


def build_network(config: dict[str, Any]) -> IQTUNet3D:
    """The network a model card describes (its "network" field)."""
    return IQTUNet3D(IQTUNetConfig.from_dict(config))


def precision_for(device: str) -> torch.dtype | None:
    """Half precision on CUDA; bfloat16 on CPUs with native bf16 (AVX512-BF16/AMX: 2.1× less CPU time
    for the paper network, output within ~1–2 % relative L2 of float32; `mrisr bench iqt`); else float32."""
    if device.startswith("cuda"):
        return autocast_dtype(device)
    native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return torch.bfloat16 if native else None


def trajectory_warning(card: dict[str, Any], start_time: float | None) -> str | None:
    """Why the requested sampling does not match how the model was trained, or None."""
    aligned = (card.get("latent_alignment") or {}).get("start_time")
    if start_time is None:
        return None if aligned is None else (
            f"the model was trained with latent alignment for t <= {aligned:g} only; full diffusion from "
            f"t = 1 is outside its training: use --start-step with t_K = K / steps = {aligned:g}")
    if aligned is None:
        return ("partial diffusion (--start-step) on a model not trained with latent alignment: the diffused "
                "LR latent only approximates the HR one and quality drops for small K (PDM Fig. 3b)")
    if abs(aligned - start_time) > 1e-6:
        return (f"the model was trained with latent alignment from t_K = {aligned:g} but runs from "
                f"t_K = K / steps = {start_time:g}: choose K and steps with K / steps = {aligned:g}")
    return None


class DiffusionIQTMethod:
    """Whole-volume DiffusionIQT sampling; `network` (and optionally its `card`) can be injected."""

    def __init__(self, spec: MethodSpec, network: IQTUNet3D | None = None, *, card: dict[str, Any] | None = None):
        self.spec, self.network = spec, network
        self.card = card if card is not None or network is None else {}

    def _model(self, device: str) -> tuple[IQTUNet3D, dict[str, Any]]:
        card = self.card if self.card is not None else card_for(self.spec)
        network = self.network if self.network is not None else load_network(card, build_network, device)
        return network.to(device).eval().to(memory_format=torch.channels_last_3d), card

    def _plan(self, network: IQTUNet3D, inputs: MethodInput) -> BlockPlan:
        settings = inputs.settings
        patch = settings.patch_size or 32
        multiple = network.config.patch_multiple
        if patch % multiple:
            raise InputError(f"patch size {patch} does not fit this model: use --patch-size a multiple of {multiple}")
        batch = settings.batch_size or (4 if settings.device.startswith("cuda") else 1)
        return BlockPlan(patch, network.config.parts, settings.overlap, batch)

    def run(self, inputs: MethodInput, progress: ProgressCallback, cancel: CancelToken) -> np.ndarray:
        settings = inputs.settings
        steps = settings.steps or 20
        start_step = settings.start_step or None
        VDMScheduler(steps).set_timesteps(start_step or steps, start_step)  # reject bad steps before loading
        network, card = self._model(settings.device)
        condition = sitk.GetArrayFromImage(resample(inputs.lr, inputs.grid, "bspline")).astype(np.float32)
        scaled = to_model_range(condition)
        plan = self._plan(network, inputs)
        ticker = _Ticker(progress, cancel, start_step or steps)
        denoiser = BlockDenoiser(vdm.concat_conditioning(network), scaled, plan, settings.device, inputs.mask,
                                 precision_for(settings.device), ticker.block)
        if denoiser.num_blocks == 0:
            return condition
        ticker.block(0, denoiser.num_blocks)
        out = sample_volume(denoiser, torch.from_numpy(scaled)[None, None], card, steps, start_step,
                            generator_for(settings.device, settings.seed), ticker.step)
        return from_model_range(out[0, 0].float().cpu().numpy())


def sample_volume(denoiser: Denoiser, condition: torch.Tensor, card: dict[str, Any], steps: int,
                  start_step: int | None, generator: torch.Generator,
                  callback: StepCallback | None = None) -> torch.Tensor:
    """DiffusionIQT sampling of whole volumes or blocks: `steps` T of the VDM grid from t = 1 (start_step
    None: pure noise) or the K steps from t_K = K/T (PDM: the diffused condition α_K x_c + σ_K ε), on the
    latent-aligned trajectory when the model card says it was trained on it.

    condition (B, 1, D, H, W) in [−1, 1], on any device; returns x̂ (B, 1, D, H, W) in [−1, 1] on the
    generator's device. Shared by the method (patch-blending denoiser) and training validation.
    """
    device = generator.device
    condition = condition.to(device=device, dtype=torch.float32)
    partial = start_step is not None
    aligned = partial and (card.get("latent_alignment") or {}).get("start_time") is not None
    scheduler = VDMScheduler(steps, condition if aligned else None)
    scheduler.set_timesteps(start_step or steps, start_step)
    warning = trajectory_warning(card, scheduler.times[0] if partial else None)
    if warning:
        log.warning(warning)
    noise = randn(condition.shape, generator, device)
    x = scheduler.add_noise(condition, noise, scheduler.times[0]) if partial else noise
    with torch.no_grad():
        return sample(denoiser, x, scheduler, generator=generator, callback=callback)


class _Ticker:
    """Progress per block and step (unit: one block evaluation) and cancellation between blocks."""

    def __init__(self, progress: ProgressCallback, cancel: CancelToken, steps: int):
        self.progress, self.cancel, self.steps = progress, cancel, steps
        self.done_steps = 0

    def block(self, done: int, total: int) -> None:
        self.cancel.check()
        self.progress(ProgressEvent("sample", self.done_steps * total + done, self.steps * total,
                                    f"step {self.done_steps + 1}/{self.steps}, block {done}/{total}"))

    def step(self, done: int, total: int) -> None:
        self.done_steps = done
        self.cancel.check()
