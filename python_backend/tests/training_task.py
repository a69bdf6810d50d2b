"""A small real training task for trainer tests: a 2-layer CNN learns to sharpen B-spline-interpolated
5 mm MNI152 slices towards the 1 mm template (real data, seconds of CPU)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import SimpleITK as sitk
import torch

from mrisr.simulation.degradation import PRESETS, degrade
from mrisr.imaging.geometry import Grid, resample
from mrisr.simulation.template import mni_image


@lru_cache(maxsize=1)
def volumes() -> tuple[np.ndarray, np.ndarray]:
    hr = mni_image("t1")[40:160, 40:190, 30:160]
    condition = resample(degrade(hr, PRESETS["thick5"]), Grid.of(hr), "bspline")
    scale = 1.0 / float(sitk.GetArrayViewFromImage(hr).max())
    return sitk.GetArrayFromImage(hr) * scale, sitk.GetArrayFromImage(condition) * scale


def crops(rng: np.random.Generator, count: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    hr, condition = volumes()
    out_hr, out_c = [], []
    for _ in range(count):
        x = int(rng.integers(0, hr.shape[2]))
        z, y = int(rng.integers(0, hr.shape[0] - size)), int(rng.integers(0, hr.shape[1] - size))
        out_hr.append(hr[z:z + size, y:y + size, x])
        out_c.append(condition[z:z + size, y:y + size, x])
    return torch.from_numpy(np.stack(out_hr)[:, None]), torch.from_numpy(np.stack(out_c)[:, None])


class SharpenTask:
    name = "sharpen_test"

    def build_network(self) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 3, padding=1))

    def card(self) -> dict:
        return {"method": "sharpen_test", "preset": "test", "network": {"channels": 8}}

    def loss(self, network, rng, generator, device):
        hr, condition = crops(rng, 4)
        prediction = condition.to(device) + network(condition.to(device))
        return torch.mean((prediction - hr.to(device)) ** 2)

    def validate(self, network, device) -> dict:
        hr, condition = crops(np.random.default_rng(12345), 8)
        with torch.no_grad():
            error = torch.mean((condition + network(condition) - hr) ** 2)
        return {"psnr": float(10 * torch.log10(1 / error))}
