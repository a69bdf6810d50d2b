"""The rules of scan adaptation, without torch: the budget range, its default, and which methods can adapt
(the registry entry's config says "adaptation": true). `mrisr.plan` exports and checks them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mrisr.errors import InputError
from mrisr.registry import MethodSpec

MAX_SECONDS = 3600.0
DEFAULT_SECONDS = 180.0  # `--adapt` without a value, and the panel's "Adapt to this scan" box


@dataclass(frozen=True)
class AdaptSettings:
    """How long and on what to fine-tune (the budget is wall-clock seconds on this machine)."""

    seconds: float
    slice_thickness: float | None = None  # mm; default: the coarse spacing (contiguous slices)
    seed: int = 0
    patch: int = 64
    batch_size: int = 8
    learning_rate: float = 1e-3  # peak; cosine decay to 0 over the budget
    ema_decay: float = 0.99  # the adapted weights are this moving average of the fine-tuned ones
    max_steps: int | None = None  # also stop after this many steps (tests, step-matched comparisons)

    def __post_init__(self) -> None:
        check_budget(self.seconds)


def check_budget(seconds: float) -> None:
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
        raise InputError(f"adaptation budget {seconds!r} s is out of range: use --adapt 1..{MAX_SECONDS:g} seconds")


def check_adapt(spec: MethodSpec, seconds: float, slice_thickness: float | None) -> None:
    """Refuse a budget out of range, a method that cannot adapt, or a non-positive slice thickness."""
    if slice_thickness is not None and not (math.isfinite(slice_thickness) and slice_thickness > 0):
        raise InputError(f"slice thickness {slice_thickness!r} mm is invalid: give --slice-thickness a positive number")
    if not seconds:
        return
    check_budget(seconds)
    if not spec.config.get("adaptation"):
        raise InputError(f"method {spec.name!r} cannot adapt to the scan: use --method ressrdiff, or leave out --adapt")
