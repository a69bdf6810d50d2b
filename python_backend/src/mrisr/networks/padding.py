"""Padding of (..., H, W) images at the high end to multiples of a network's size constraint."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

Image = TypeVar("Image")
"""A numpy array or a torch tensor of shape (..., H, W)."""

MODES = ("reflect", "constant")


def pad_to_multiple(image: Image, multiple: int, mode: str = "reflect") -> Image:
    """Pad the last two axes at their high end so H and W are multiples of `multiple`.

    mode "reflect" mirrors the image, falling back to repeating the edge where the image is too small
    to mirror (min(H, W) ≤ the largest pad); "constant" pads with zeros. Crop with `[..., :H, :W]`.
    """
    if mode not in MODES:
        raise ValueError(f"padding mode {mode!r} is invalid: use one of {', '.join(MODES)}")
    height, width = image.shape[-2:]
    extra = (-height % multiple, -width % multiple)
    if not any(extra):
        return image
    if mode == "reflect" and min(height, width) <= max(extra):
        mode = "edge"
    if isinstance(image, np.ndarray):
        widths = [(0, 0)] * (image.ndim - 2) + [(0, extra[0]), (0, extra[1])]
        return np.pad(image, widths, mode=mode)
    import torch.nn.functional as F

    return F.pad(image, (0, extra[1], 0, extra[0]), mode="replicate" if mode == "edge" else mode)
