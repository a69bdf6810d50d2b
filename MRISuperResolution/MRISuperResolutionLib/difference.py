"""The difference map (enhanced − interpolated input) and how it is displayed.

A diverging colour table (Slicer's DivergingBlueRed when the Colors module loaded it, otherwise an
equivalent blue–white–red table made here), a window symmetric around 0 and a colour legend.
"""

from __future__ import annotations

import numpy as np
import slicer

SLICER_DIVERGING_COLOR_ID = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
FALLBACK_COLOR_NAME = "DivergingBlueRed (MRISuperResolution)"
FALLBACK_COLOR_ATTRIBUTE = "MRISuperResolution.DivergingColorTable"
GREY_COLOR_ID = "vtkMRMLColorTableNodeGrey"
LEGEND_TITLE = "Enhanced - input"

# Blue – white – red anchors (ColorBrewer RdBu, reversed so that positive differences are red).
_ANCHORS = np.array([
    [0.019, 0.188, 0.380], [0.129, 0.400, 0.675], [0.263, 0.576, 0.765], [0.573, 0.773, 0.871],
    [0.820, 0.898, 0.941], [0.969, 0.969, 0.969], [0.992, 0.859, 0.780], [0.957, 0.647, 0.510],
    [0.839, 0.376, 0.302], [0.698, 0.094, 0.169], [0.404, 0.000, 0.122],
])


def differenceArray(enhanced: np.ndarray, interpolated: np.ndarray) -> np.ndarray:
    """Voxel-wise enhanced − interpolated input, float32, on the output grid."""
    if enhanced.shape != interpolated.shape:
        raise ValueError(f"difference of arrays with shapes {enhanced.shape} and {interpolated.shape}")
    return enhanced.astype(np.float32) - interpolated.astype(np.float32)


def symmetricWindow(difference: np.ndarray, percentile: float = 99.5) -> float:
    """A window width 2·m around 0, m = the given percentile of |difference| over non-zero voxels.

    The percentile keeps a few outliers from washing out the map; an all-zero map gets width 1.
    """
    magnitude = np.abs(difference[difference != 0])
    if magnitude.size == 0:
        return 1.0
    half = float(np.percentile(magnitude, percentile))
    return 2.0 * half if half > 0 else 2.0 * float(magnitude.max())


def divergingColorNodeID(scene) -> str:
    """Slicer's DivergingBlueRed table when present, else a blue–white–red table added once to the scene."""
    if scene.GetNodeByID(SLICER_DIVERGING_COLOR_ID) is not None:
        return SLICER_DIVERGING_COLOR_ID
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLColorTableNode")
        if node.GetAttribute(FALLBACK_COLOR_ATTRIBUTE) == "1":
            return node.GetID()
    table = slicer.vtkMRMLColorTableNode()
    table.SetTypeToUser()
    table.SetName(FALLBACK_COLOR_NAME)
    table.SetAttribute(FALLBACK_COLOR_ATTRIBUTE, "1")
    colors = divergingColors(256)
    table.SetNumberOfColors(len(colors))
    for index, (r, g, b) in enumerate(colors):
        table.SetColor(index, f"{index}", float(r), float(g), float(b), 1.0)
    table.SetHideFromEditors(False)
    scene.AddNode(table)
    return table.GetID()


def divergingColors(count: int) -> np.ndarray:
    """`count` RGB colours from blue (most negative) through white (0) to red (most positive)."""
    positions = np.linspace(0.0, 1.0, len(_ANCHORS))
    samples = np.linspace(0.0, 1.0, count)
    return np.stack([np.interp(samples, positions, _ANCHORS[:, c]) for c in range(3)], axis=1)


def showAsDifference(node, window: float) -> None:
    """Display a difference volume with the diverging colours and a window symmetric around 0."""
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(divergingColorNodeID(node.GetScene()))
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(window, 0.0)
    display.SetApplyThreshold(False)
    display.SetInterpolate(True)


def showAsGrey(node, windowLevel=None) -> None:
    """Display an image in grey, with the given (window, level) so that several images compare alike."""
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(GREY_COLOR_ID)
    if windowLevel is not None and windowLevel[0] > 0:
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(*windowLevel)
    else:
        display.SetAutoWindowLevel(True)


def addLegend(node, viewNodeIDs=()):
    """A colour legend for the difference map, shown in the given views (all views when empty)."""
    legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(node)
    if legend is None:
        return None
    legend.SetTitleText(LEGEND_TITLE)
    legend.SetVisibility(True)
    legend.RemoveAllViewNodeIDs()
    for viewNodeID in viewNodeIDs:
        legend.AddViewNodeID(viewNodeID)
    return legend
