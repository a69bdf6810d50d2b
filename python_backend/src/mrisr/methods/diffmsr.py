"""DiffMSR as a method: multi-contrast slice-wise super-resolution guided by a latent diffusion prior.

Per volume: optional rigid registration of the reference to the target, then slice-wise (shared
`enhance_slicewise`) CE → T-step latent DDPM (one seeded chain per slice) → PLWformer decoding, and
finally k-space replacement with the LR acquisition where its grid is a k-space truncation of
the output grid in the slicing plane. Registry config keys: "card", "needs_reference", "T_train",
"variant" ("with_reference" | "without_reference"), "register_reference", "kspace_replacement",
"batch_size".
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk
import torch

from mrisr.simulation import kspace
from mrisr.device import autocast
from mrisr.diffusion.latent_ddpm import LatentDiffusionConfig, sample_prior
from mrisr.errors import InputError
from mrisr.imaging.geometry import Grid, resample
from mrisr.inference.slicewise import SlicePlan, default_axes, enhance_slicewise
from mrisr.networks.diffmsr import DiffMSRNetwork, build_network
from mrisr.progress import CancelToken, ProgressCallback, ProgressEvent
from mrisr.imaging.registration import register_rigid, resample_through
from mrisr.registry import MethodSpec
from mrisr.methods import MethodInput
from mrisr.methods.learned import autocast_dtype, card_for, generator_for, load_network

log = logging.getLogger(__name__)
DEFAULT_BATCH = 8
DC_CHUNK = 16  # slices per k-space replacement FFT chunk


def truncated_axes(lr_grid: Grid, output_grid: Grid, tolerance: float = 1e-3) -> tuple[int, ...] | None:
    """Numpy axes along which the LR grid is a k-space truncation of the output grid (same direction,
    extent and corner, fewer samples); None when the grids are not nested that way."""
    if not np.allclose(lr_grid.direction, output_grid.direction, atol=1e-6):
        return None
    lr_low, lr_high = lr_grid.extent_corners()
    out_low, out_high = output_grid.extent_corners()
    scale = tolerance * float(np.max(np.asarray(output_grid.size) * np.asarray(output_grid.spacing)))
    if not (np.allclose(lr_low, out_low, atol=scale) and np.allclose(lr_high, out_high, atol=scale)):
        return None
    if any(n_lr > n_out for n_lr, n_out in zip(lr_grid.size, output_grid.size)):
        return None
    return tuple(sorted(2 - a for a in range(3) if lr_grid.size[a] < output_grid.size[a]))


class _SliceModel:
    """The SliceModel of `enhance_slicewise`: CE → latent DDPM per slice → PLWformer."""

    def __init__(self, network: DiffMSRNetwork, diffusion: LatentDiffusionConfig, steps: int, device: str,
                 cancel: CancelToken):
        self.network, self.diffusion, self.steps, self.device, self.cancel = network, diffusion, steps, device, cancel

    @torch.no_grad()
    def __call__(self, condition: np.ndarray, reference: np.ndarray | None, seeds: list[int]) -> np.ndarray:
        """condition, reference (B, H, W) → (B, H, W) float32."""
        cond = torch.from_numpy(condition).to(self.device)[:, None]
        ref = None
        if self.network.uses_reference and reference is not None:
            ref = torch.from_numpy(reference).to(self.device)[:, None]
        with autocast(self.device, autocast_dtype(self.device)):
            latent_condition = self.network.extract_condition(cond)
        generators = [generator_for(self.device, s) for s in seeds]
        prior = sample_prior(self.network, latent_condition.float(), self.diffusion, self.steps, generators,
                             callback=lambda done, total: self.cancel.check())
        with autocast(self.device, autocast_dtype(self.device)):
            out = self.network.decode(cond, ref, prior)
        return out[:, 0].float().cpu().numpy()


class DiffMSRMethod:
    """DiffMSR (Li et al., CVPR 2024) behind the common method interface."""

    def __init__(self, spec: MethodSpec, network: DiffMSRNetwork | None = None):
        self.spec = spec
        self.network = network
        self.train_steps = int(spec.config.get("T_train", 4))
        self.with_reference = spec.config.get("variant", "with_reference") != "without_reference"

    def _load(self, device: str) -> tuple[DiffMSRNetwork, LatentDiffusionConfig]:
        if self.network is not None:
            network, diffusion = self.network.to(device).eval(), LatentDiffusionConfig(self.train_steps)
        else:
            card = card_for(self.spec)
            network = load_network(card, build_network, device)
            diffusion = LatentDiffusionConfig.from_dict(card.get("diffusion", {}))
        if diffusion.num_train_steps != self.train_steps:
            raise InputError(f"model for {self.spec.name!r} was trained with T={diffusion.num_train_steps} latent "
                             f"steps but the method samples with T_train={self.train_steps}: retrain or fix the card")
        if network.uses_reference != self.with_reference:
            kind = "with" if network.uses_reference else "without"
            raise InputError(f"model for {self.spec.name!r} was built {kind} a reference, which does not match "
                             f"the method's variant: choose the matching method")
        return network, diffusion

    def _reference(self, inputs: MethodInput, condition: sitk.Image, progress: ProgressCallback) -> np.ndarray | None:
        """The reference on the output grid, rigidly registered to the target when that moves it."""
        if not self.with_reference:
            if inputs.reference is not None:
                log.info("%s runs without reference; the given reference is ignored", self.spec.name)
            return None
        if inputs.reference is None:
            raise InputError(f"method {self.spec.name!r} needs a reference volume of another contrast: pass "
                             f"--reference (or use the variant without reference)")
        array = sitk.GetArrayFromImage(inputs.reference)
        if not self.spec.config.get("register_reference", True):
            return array
        progress(ProgressEvent("register", 0, 1, "rigid registration of the reference"))
        try:
            result = register_rigid(condition, inputs.reference)
        except RuntimeError as error:
            reason = str(error).strip().splitlines()[-1][-160:]
            message = f"reference registration failed, the reference is used as given ({reason})"
            log.warning(message)
            progress(ProgressEvent("register", 1, 1, message))
            return array
        progress(ProgressEvent("register", 1, 1, result.report))
        return resample_through(inputs.reference, result.transform, inputs.grid) if result.moved else array

    def _kspace_replacement(self, output: np.ndarray, inputs: MethodInput, axes: tuple[int, ...], device: str,
                            progress: ProgressCallback) -> np.ndarray:
        """Hard k-space replacement with the LR acquisition along the in-plane truncated axes."""
        dims = truncated_axes(Grid.of(inputs.lr), inputs.grid)
        if len(axes) != 1 or not dims or axes[0] in dims:
            log.info("k-space replacement skipped: the LR is not an in-plane k-space truncation of the "
                     "output grid in the slicing plane %s", axes)
            return output
        progress(ProgressEvent("k-space replacement", 0, 1, "k-space replacement with the LR"))
        lr = sitk.GetArrayFromImage(inputs.lr)
        out = np.empty_like(output)
        for first in range(0, output.shape[axes[0]], DC_CHUNK):
            index = [slice(None)] * 3
            index[axes[0]] = slice(first, first + DC_CHUNK)
            estimate = torch.from_numpy(np.ascontiguousarray(output[tuple(index)])).to(device)
            measured = torch.from_numpy(np.ascontiguousarray(lr[tuple(index)])).to(device)
            out[tuple(index)] = kspace.replace_measured(estimate, measured, dims).cpu().numpy()
        progress(ProgressEvent("k-space replacement", 1, 1, "k-space replacement with the LR"))
        return out

    def run(self, inputs: MethodInput, progress: ProgressCallback, cancel: CancelToken) -> np.ndarray:
        """The enhanced, normalised (z, y, x) float32 volume on `inputs.grid`."""
        settings = inputs.settings
        network, diffusion = self._load(settings.device)
        steps = settings.steps or diffusion.num_train_steps
        condition = resample(inputs.lr, inputs.grid, "bspline")
        reference = self._reference(inputs, condition, progress)
        cancel.check()
        axes = settings.slice_axes or default_axes(inputs.lr.GetSpacing(), inputs.grid.spacing)
        batch = settings.batch_size or int(self.spec.config.get("batch_size", DEFAULT_BATCH))
        plan = SlicePlan(axes, batch, network.config.pad_multiple)
        model = _SliceModel(network, diffusion, steps, settings.device, cancel)
        output = enhance_slicewise(model, sitk.GetArrayFromImage(condition), plan, inputs.mask, reference,
                                   settings.seed, progress, cancel)
        if self.spec.config.get("kspace_replacement", True):
            output = self._kspace_replacement(output, inputs, axes, settings.device, progress)
        return output.astype(np.float32)
