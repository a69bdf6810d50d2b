"""Apply a 2D slice model to a 3D volume: slice stacks along one or more planes, fused by averaging.

Shared by every 2D method (Res-SRDiff, SR3 + PDM, DiffMSR). The model sees batches of (B, H, W)
slices of the normalised condition (the LR volume already on the output grid) and, for
multi-contrast methods, the matching reference slices; slices without foreground keep the condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from mrisr.errors import InputError
from mrisr.progress import CancelToken, ProgressCallback, ProgressEvent
from mrisr.inference.slicing import iter_slice_batches, put_slices, take_slices

SliceModel = Callable[[np.ndarray, np.ndarray | None, Sequence[int]], np.ndarray]
"""(condition (B, H, W), reference (B, H, W) or None, one seed per slice) → enhanced (B, H, W), float32."""


@dataclass(frozen=True)
class SlicePlan:
    """Which numpy axes to slice along (one = single plane; two or three = multi-plane fusion)."""

    axes: tuple[int, ...]
    batch_size: int = 8
    pad_multiple: int = 1


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


def _pad(stack: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad (B, H, W) slices at the high end so H and W are multiples of `multiple`."""
    height, width = stack.shape[1:]
    extra = (-height % multiple, -width % multiple)
    if not any(extra):
        return stack, (height, width)
    mode = "reflect" if min(height, width) > max(extra) else "edge"
    return np.pad(stack, ((0, 0), (0, extra[0]), (0, extra[1])), mode=mode), (height, width)


def _run_axis(model: SliceModel, condition: np.ndarray, reference: np.ndarray | None, mask: np.ndarray,
              axis: int, plan: SlicePlan, seed: int, tick: Callable[[], None]) -> np.ndarray:
    output = condition.copy()
    for indices, stack in iter_slice_batches(condition, axis, plan.batch_size, mask):
        padded, (height, width) = _pad(stack, plan.pad_multiple)
        ref = None if reference is None else _pad(take_slices(reference, axis, indices), plan.pad_multiple)[0]
        enhanced = model(padded, ref, [seed + 100_003 * axis + i for i in indices])
        put_slices(output, axis, indices, enhanced[:, :height, :width])
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
) -> np.ndarray:
    """Enhance a (z, y, x) volume slice by slice along each axis of the plan and average the planes.

    Each slice gets its own seed (from `seed`, the axis and its index), so results do not depend on
    the batch size.
    """
    if not plan.axes or any(a not in (0, 1, 2) for a in plan.axes):
        raise InputError(f"slice axes {plan.axes} are invalid: use one or more of 0, 1, 2")
    if reference is not None and reference.shape != condition.shape:
        raise ValueError(f"reference shape {reference.shape} differs from condition shape {condition.shape}")
    mask = np.ones(condition.shape, bool) if mask is None else mask
    batches = sum(-(-len(np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a)))) // plan.batch_size)
                  for a in plan.axes)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(ProgressEvent("slices", done, batches, f"{done}/{batches} slice batches"))
        if cancel is not None:
            cancel.check()

    planes = [_run_axis(model, condition, reference, mask, a, plan, seed, tick) for a in plan.axes]
    return np.mean(planes, axis=0).astype(np.float32)
