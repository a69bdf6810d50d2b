"""Whole-volume denoiser from a block network: one global x_t, block predictions blended at every step.

A diffusion sampler sees only a callable (x_t volume, t) → x̂ volume. Behind it, the volume is covered
by overlapping blocks of parts³ patches (e.g. 96³ = 3×3×3 patches of 32³, DiffusionIQT's cross-batch
block); every block is predicted by the network from the same global x_t and condition, and the
predictions are blended with a Gaussian window (`mrisr.inference.tiling.BlendingAggregator`). Because all
blocks see one x_t and their x̂ are blended before the sampler's update, neighbouring blocks never
drift apart: there are no seams (sampling each block from its own noise would leave them). Blocks
without foreground are skipped; voxels no block covers take the condition. Knows nothing of diffusion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mrisr.device import autocast
from mrisr.errors import InputError
from mrisr.inference.tiling import BlendingAggregator, Patch, PatchGrid

BlockModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(x_t blocks (B, 1, S, S, S), condition blocks (B, 1, S, S, S), t (B,)) → x̂ blocks (B, 1, S, S, S)."""

BlockCallback = Callable[[int, int], None]
"""(blocks done in this evaluation, blocks per evaluation); may raise to cancel."""


@dataclass(frozen=True)
class BlockPlan:
    """Blocks of `parts`³ patches of `patch_size`³ voxels, overlapping by `overlap`, `batch_size` per call."""

    patch_size: int = 32
    parts: int = 3
    overlap: float = 0.25
    batch_size: int = 1
    window: str = "gaussian"

    def __post_init__(self) -> None:
        if self.patch_size < 1 or self.parts < 1 or self.batch_size < 1:
            raise InputError(f"block plan {self} is invalid: patch size, parts and batch size must be >= 1")
        if not 0.0 <= self.overlap < 1.0:
            raise InputError(f"overlap {self.overlap} is out of range: use a fraction in [0, 1)")

    @property
    def block_size(self) -> int:
        return self.parts * self.patch_size


class BlockDenoiser:
    """Callable (x_t (1, 1, D, H, W), t (1,)) → x̂ (1, 1, D, H, W) over a (D, H, W) condition volume.

    `autocast` (e.g. torch.bfloat16) runs the model in reduced precision; blending is float32 and stays on
    `device` (no host round trip per diffusion step).
    """

    def __init__(self, model: BlockModel, condition: np.ndarray, plan: BlockPlan, device: str,
                 mask: np.ndarray | None = None, autocast: torch.dtype | None = None,
                 on_block: BlockCallback | None = None):
        self.model, self.plan, self.device, self.autocast, self.on_block = model, plan, device, autocast, on_block
        self.condition = np.asarray(condition, dtype=np.float32)
        self.grid = PatchGrid(self.condition.shape, plan.block_size, plan.overlap)
        self.blocks: list[Patch] = self.grid.patches(mask) if mask is not None else list(self.grid)
        self._condition = self._pad(torch.from_numpy(self.condition).to(device)[None, None])

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def _pad(self, volume: torch.Tensor) -> torch.Tensor:
        """Replicate-pad (1, 1, D, H, W) at the high end to the grid's padded shape."""
        extra = [p - d for d, p in zip(self.grid.shape, self.grid.padded_shape)]
        if not any(extra):
            return volume
        return F.pad(volume, (0, extra[2], 0, extra[1], 0, extra[0]), mode="replicate")

    def _gather(self, volume: torch.Tensor, batch: list[Patch]) -> torch.Tensor:
        return torch.stack([volume[(0, slice(None), *p.slices)] for p in batch])

    def _predict(self, x_t: torch.Tensor, batch: list[Patch], t: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(self.device, self.autocast):
            prediction = self.model(self._gather(x_t, batch), self._gather(self._condition, batch),
                                    t.reshape(1).expand(len(batch)).to(self.device))
        return prediction.float()

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if tuple(x_t.shape[2:]) != self.condition.shape:
            raise ValueError(f"x_t of shape {tuple(x_t.shape)} does not match the condition {self.condition.shape}")
        padded = self._pad(x_t.to(self.device, torch.float32))
        aggregator = BlendingAggregator(self.grid, self.plan.window, device=self.device)
        size = self.plan.batch_size
        for start in range(0, len(self.blocks), size):
            batch = self.blocks[start:start + size]
            for patch, prediction in zip(batch, self._predict(padded, batch, t)):
                aggregator.add(patch, prediction[0])
            if self.on_block is not None:
                self.on_block(start + len(batch), len(self.blocks))
        blended = aggregator.result(fallback=self.grid.crop(self._condition[0, 0]))
        return blended.to(x_t.device, x_t.dtype)[None, None]
