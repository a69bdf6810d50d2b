"""Over-fitting sanity run: a tiny Res-SRDiff learns four slices of an MNI crop (Eq. 13 loss with LPIPS)."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mrisr.simulation.degradation import PRESETS, degrade_to_hr_grid
from mrisr.diffusion.resshift import ResShiftSchedule, ResShiftScheduler, denoiser, randn, training_loss
from mrisr.diffusion.intensity import from_model_range
from mrisr.diffusion.scheduler import sample
from mrisr.imaging.foreground import foreground_mask
from mrisr.evaluation.metrics import psnr
from mrisr.networks.swin_unet2d import SwinUNet2d, SwinUNetConfig
from mrisr.imaging.normalization import robust_scale
from mrisr.evaluation.perceptual import lpips_alex
from mrisr.simulation.template import mni_image

TINY = SwinUNetConfig(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, swin_levels=(1,), swin_embed_dim=16,
                      num_heads=2, window_size=4, norm_groups=4, patch_size=2)



def training_slices() -> tuple[torch.Tensor, torch.Tensor]:
    """Four coronal 64×64 slices (z, x) of a 64³ MNI crop and their thick5 B-spline conditions, in [−1, 1]."""
    hr = mni_image("t1")[66:130, 100:164, 60:124]
    _, condition = degrade_to_hr_grid(hr, PRESETS["thick5"])
    h, c = sitk.GetArrayFromImage(hr), sitk.GetArrayFromImage(condition)
    scale = robust_scale(h, foreground_mask(h))
    rows = [20, 28, 36, 44]

    def stack(volume: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(scale.apply(volume)[:, rows, :].transpose(1, 0, 2).copy())[:, None] * 2 - 1

    return stack(h), stack(c)


@pytest.mark.slow
def test_tiny_model_overfits_and_beats_bspline_on_its_training_slices():
    x, y = training_slices()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        network = SwinUNet2d(TINY)
    optimiser = torch.optim.Adam(network.parameters(), lr=2e-3)
    generator, perceptual = torch.Generator().manual_seed(0), lpips_alex("cpu")
    losses = []
    for _ in range(150):
        loss = training_loss(network, x, y, generator, perceptual=perceptual)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.3 * np.mean(losses[:20])

    schedule, generators = ResShiftSchedule(), [torch.Generator().manual_seed(s) for s in range(4)]
    network.eval()
    with torch.no_grad():
        scheduler = ResShiftScheduler(schedule)
        start = scheduler.add_noise(y, randn(y.shape, generators, "cpu"), 4)
        out = sample(denoiser(network, y), start, scheduler, generator=generators)
    unit = lambda v: from_model_range(v).numpy()  # noqa: E731
    bspline, diffusion = psnr(unit(y), unit(x), data_range=1.0), psnr(unit(out), unit(x), data_range=1.0)
    assert diffusion > bspline + 1.0, (bspline, diffusion)
