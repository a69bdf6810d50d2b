"""Apply a 2D slice model to a 3D volume: slice stacks along one or more planes, fused by averaging.

Shared by every 2D method (Res-SRDiff, SR3 + PDM, DiffMSR) and the tissue segmenter (multi-channel
output). The model sees batches of (B, H, W) slices of the normalised condition (the LR volume already
on the output grid) and, for multi-contrast methods, the matching reference slices; slices without
foreground keep the condition (or the given background). Knows nothing of diffusion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from mrisr.errors import InputError
from mrisr.progress import CancelToken, ProgressCallback, ProgressEvent
from mrisr.inference.slicing import iter_slice_batches, put_slices, take_slices
from mrisr.networks.padding import pad_to_multiple

SliceModel = Callable[[np.ndarray, np.ndarray | None, Sequence[int]], np.ndarray]
"""(condition (B, H, W), reference (B, H, W) or None, one seed per slice) → enhanced (B, H, W) or
(B, C, H, W), float32; H and W padded to the plan's `pad_multiple` (reflect), cropped back after."""


@dataclass(frozen=True)
class SlicePlan:
    """Which numpy axes to slice along (one = single plane; two or three = multi-plane fusion), how many
    slices per model call, and how slices are padded to the model's size multiple (`pad_to_multiple`)."""

    axes: tuple[int, ...]
    batch_size: int = 8
    pad_multiple: int = 1
    pad_mode: str = "reflect"


def default_axes(input_spacing: Sequence[float], output_spacing: Sequence[float]) -> tuple[int, ...]:
    """Default slice planes: those containing the one low-resolution axis (e.g. coronal + sagittal for
    thick axial slices), as in PDM's through-plane setting; when two axes are coarse (in-plane k-space
    truncation) the one plane holding both; when none or all are, the axial plane.

    Spacings are SimpleITK (x, y, z) order; the returned axes are numpy (z, y, x) order.
    """
    ratios = np.asarray(input_spacing, dtype=float) / np.asarray(output_spacing, dtype=float)
    coarse = [a for a in range(3) if ratios[a] > 1.0 + 1e-6]
    if len(coarse) == 1:
        return tuple(a for a in range(3) if a != 2 - coarse[0])
    if len(coarse) == 2:
        fine = next(a for a in range(3) if a not in coarse)
        return (2 - fine,)
    return (0,)


def _run_axis(model: SliceModel, condition: np.ndarray, reference: np.ndarray | None, mask: np.ndarray,
              background: np.ndarray, axis: int, plan: SlicePlan, seed: int, tick: Callable[[], None]) -> np.ndarray:
    output = background.copy()
    for indices, stack in iter_slice_batches(condition, axis, plan.batch_size, mask):
        height, width = stack.shape[1:]
        padded = pad_to_multiple(stack, plan.pad_multiple, plan.pad_mode)
        ref = None if reference is None else pad_to_multiple(take_slices(reference, axis, indices),
                                                             plan.pad_multiple, plan.pad_mode)
        enhanced = model(padded, ref, [seed + 100_003 * axis + i for i in indices])[..., :height, :width]
        if output.ndim == 4:
            for channel in range(output.shape[0]):
                put_slices(output[channel], axis, indices, enhanced[:, channel])
        else:
            put_slices(output, axis, indices, enhanced)
        tick()
    return output


def enhance_slicewise(
    model: SliceModel,
    condition: np.ndarray,
    plan: SlicePlan,
    mask: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    background: np.ndarray | None = None,
    stage: str = "slices",
) -> np.ndarray:
    """Enhance a (z, y, x) volume slice by slice along each axis of the plan and average the planes.

    The model returns (B, H, W) slices, or (B, C, H, W) for multi-channel output (e.g. class
    probabilities); slices without foreground take `background` — (z, y, x), or (C, z, y, x) for C
    channels; default the condition. Returns float32 of the background's shape. Each slice gets its own
    seed (from `seed`, the axis and its index), so results do not depend on the batch size. Progress
    events are reported under `stage`.
    """
    if not plan.axes or any(a not in (0, 1, 2) for a in plan.axes):
        raise InputError(f"slice axes {plan.axes} are invalid: use one or more of 0, 1, 2")
    if reference is not None and reference.shape != condition.shape:
        raise ValueError(f"reference shape {reference.shape} differs from condition shape {condition.shape}")
    background = condition if background is None else background
    if background.shape[-3:] != condition.shape or background.ndim not in (3, 4):
        raise ValueError(f"background shape {background.shape} is not (z, y, x) or (C, z, y, x) of {condition.shape}")
    mask = np.ones(condition.shape, bool) if mask is None else mask
    batches = sum(-(-len(np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a)))) // plan.batch_size)
                  for a in plan.axes)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(ProgressEvent(stage, done, batches, f"{done}/{batches} slice batches"))
        if cancel is not None:
            cancel.check()

    planes = [_run_axis(model, condition, reference, mask, background, a, plan, seed, tick) for a in plan.axes]
    return np.mean(planes, axis=0).astype(np.float32)
