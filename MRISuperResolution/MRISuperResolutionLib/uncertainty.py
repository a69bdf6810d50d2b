"""How the uncertainty map (the per-voxel standard deviation of several posterior samples) is shown:
Slicer's built-in Iron heat colours from 0 (black: the samples agree) to a high percentile (white)."""

from __future__ import annotations

import numpy as np

IRON_COLOR_ID = "vtkMRMLColorTableNodeIron"


def uncertaintyWindow(std: np.ndarray, percentile: float = 99.5) -> tuple[float, float]:
    """(window, level) spanning 0 … the given percentile of the non-zero standard deviations, so a few
    extreme voxels do not wash the map out; an all-zero map gets (1, 0.5)."""
    values = std[std > 0]
    top = float(np.percentile(values, percentile)) if values.size else 0.0
    top = top if top > 0 else 1.0
    return top, top / 2


def showAsUncertainty(node, std: np.ndarray) -> None:
    """Display a standard-deviation volume with heat colours from 0 upwards."""
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(IRON_COLOR_ID)
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(*uncertaintyWindow(std))
    display.SetApplyThreshold(False)
    display.SetInterpolate(True)
