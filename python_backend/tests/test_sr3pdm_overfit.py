"""Over-fit sanity run: a tiny SR3 network trained with PDM (K = 25, latent alignment) on four MNI slices."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mrisr.simulation.degradation import PRESETS, degrade
from mrisr.diffusion import pdm
from mrisr.imaging.geometry import Grid, resample
from mrisr.diffusion.intensity import to_model_range
from mrisr.networks.sr3_unet2d import SR3UNet2d, SR3UNet2dConfig
from mrisr.imaging.normalization import robust_scale
from mrisr.simulation.template import mni_image


def _coronal_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """HR target and B-spline-upsampled thick-slice (5 mm) condition: 4 coronal 30×32 slices, [−1, 1]."""
    hr_image = mni_image("t1")[82:114, 105:109, 70:100]  # SimpleITK (x, y, z) indexing; 30 mm = 6 thick slices
    lr_image = degrade(hr_image, PRESETS["thick5"])
    scale = robust_scale(sitk.GetArrayFromImage(lr_image))
    hr = to_model_range(scale.apply(sitk.GetArrayFromImage(hr_image)))
    up = to_model_range(scale.apply(sitk.GetArrayFromImage(resample(lr_image, Grid.of(hr_image), "bspline"))))
    as_batch = lambda a: torch.from_numpy(np.moveaxis(a, 1, 0).copy())[:, None]  # noqa: E731 - (y, 1, z, x)
    return as_batch(hr), as_batch(up)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(4 / ((a - b) ** 2).mean()))  # peak-to-peak 2 in the model range


@pytest.mark.slow
def test_tiny_sr3_pdm_overfits_and_beats_bspline():
    x, y = _coronal_pairs()
    torch.manual_seed(0)
    config = SR3UNet2dConfig(base_channels=16, channel_multipliers=(1, 2), res_blocks=1, attention_levels=(),
                             norm_groups=8, dropout=0.0)
    network, schedule = SR3UNet2d(config), pdm.sr3_schedule(100)
    optimiser = torch.optim.Adam(network.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        loss = pdm.training_loss(network, x.repeat(2, 1, 1, 1), y.repeat(2, 1, 1, 1), schedule, g, start_step=25)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:20])
    network.eval()
    denoise = pdm.denoiser(network, y, schedule, clip=1.5)
    with torch.inference_mode():
        sample = pdm.sample(denoise, y, schedule, torch.randn(x.shape, generator=g), 25, generator=g)
    assert _psnr(sample, x) > _psnr(y, x) + 1.0
