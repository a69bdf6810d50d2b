"""Agreement figures between tissue label maps: per-label volume (mL) and Dice."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mrisr.errors import InputError
from mrisr.evaluation.metrics import dice
from mrisr.segmentation.tissues import TISSUES


def label_volumes_ml(labels: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Volume in millilitres of each tissue label (voxel volume from `spacing` in mm)."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return {t.name: float((labels == t.value).sum()) * voxel_ml for t in TISSUES}


def agreement_table(first: np.ndarray, second: np.ndarray, spacing: Sequence[float],
                    names: tuple[str, str] = ("input", "output")) -> list[dict[str, float | str]]:
    """One row per tissue: label, volume (mL) in each label map and their Dice; both on one grid."""
    if first.shape != second.shape:
        raise InputError(f"label maps have different sizes {first.shape} and {second.shape}: "
                         f"resample one onto the other's grid first")
    volumes = label_volumes_ml(first, spacing), label_volumes_ml(second, spacing)
    overlap = dice(first, second, [t.value for t in TISSUES])
    return [{"label": t.name, "value": t.value, f"{names[0]}_ml": round(volumes[0][t.name], 2),
             f"{names[1]}_ml": round(volumes[1][t.name], 2), "dice": round(overlap[t.value], 4)}
            for t in TISSUES]


def format_agreement(rows: list[dict[str, float | str]]) -> str:
    """A plain-text table of `agreement_table` rows."""
    keys = [k for k in rows[0] if k != "value"]
    lines = ["  ".join(f"{k:>20}" if i == 0 else f"{k:>12}" for i, k in enumerate(keys))]
    for row in rows:
        lines.append("  ".join(f"{row[k]:>20}" if i == 0 else f"{row[k]:>12}" for i, k in enumerate(keys)))
    return "\n".join(lines)
