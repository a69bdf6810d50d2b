"""The comparison layout: Input, Enhanced, Difference and Overlay slice views, linked, in a 2 × 2 grid.

Everything goes through MRML (layout node, slice nodes, slice composite nodes), so it works with the
real layout manager in Slicer and with slice logics created by hand under `slicer-core`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import slicer

LAYOUT_ID = 5701  # custom layouts use ids >= 500
PREVIOUS_LAYOUT_ATTRIBUTE = "MRISuperResolution.PreviousLayout"
VIEW_GROUP = 57
ORIENTATIONS = ("Axial", "Coronal", "Sagittal")
OVERLAY_OPACITY = 0.5


@dataclass(frozen=True)
class ComparisonView:
    tag: str  # the slice node's singleton tag and layout name
    label: str  # the short label in the view's controller bar
    color: str


VIEWS = (
    ComparisonView("MRISRInput", "In", "#4b8bbe"),
    ComparisonView("MRISREnhanced", "SR", "#e8a33d"),
    ComparisonView("MRISRDifference", "Df", "#b04b6e"),
    ComparisonView("MRISROverlay", "Ov", "#6eb04b"),
)
INPUT, ENHANCED, DIFFERENCE, OVERLAY = (view.tag for view in VIEWS)


def _viewXML(view: ComparisonView, orientation: str) -> str:
    properties = {"orientation": orientation, "viewlabel": view.label, "viewcolor": view.color,
                  "viewgroup": str(VIEW_GROUP)}
    items = "".join(f'<property name="{k}" action="default">{v}</property>' for k, v in properties.items())
    return f'<item><view class="vtkMRMLSliceNode" singletontag="{view.tag}">{items}</view></item>'


def layoutDescription(orientation: str = "Axial") -> str:
    """Layout XML: Input | Enhanced on top, Difference | Overlay below."""
    rows = ["".join(_viewXML(view, orientation) for view in VIEWS[i:i + 2]) for i in (0, 2)]
    return ('<layout type="vertical">'
            + "".join(f'<item><layout type="horizontal">{row}</layout></item>' for row in rows)
            + "</layout>")


class ComparisonLayout:
    """Shows input, enhanced and difference volumes side by side and keeps the views in step."""

    def __init__(self, scene, applicationLogic=None) -> None:
        self.scene = scene
        self.applicationLogic = applicationLogic

    def layoutNode(self):
        node = self.scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
        if node is None:
            raise RuntimeError("the scene has no layout node: create a vtkMRMLLayoutLogic for it (Slicer does)")
        return node

    def sliceNode(self, tag: str):
        return self.scene.GetSingletonNode(tag, "vtkMRMLSliceNode")

    def compositeNode(self, tag: str):
        """The slice composite node of a comparison view (created when no slice logic made it yet)."""
        sliceNode = self.sliceNode(tag)
        composite = slicer.vtkMRMLSliceLogic.GetSliceCompositeNode(sliceNode) if sliceNode else None
        if composite is None:
            composite = slicer.vtkMRMLSliceCompositeNode()
            composite.SetLayoutName(tag)
            composite = self.scene.AddNode(composite)
        return composite

    def activate(self) -> None:
        """Switch to the comparison layout, remembering the user's layout to restore later."""
        layoutNode = self.layoutNode()
        if not layoutNode.IsLayoutDescription(LAYOUT_ID):
            layoutNode.AddLayoutDescription(LAYOUT_ID, layoutDescription())
        current = layoutNode.GetViewArrangement()
        if current != LAYOUT_ID:
            layoutNode.SetAttribute(PREVIOUS_LAYOUT_ATTRIBUTE, str(current))
            layoutNode.SetViewArrangement(LAYOUT_ID)

    def show(self, interpolated, enhanced, difference, overlayForeground=None, legend=None) -> None:
        """Put the volumes into the four views, link them and fit them to the enhanced volume."""
        self.activate()
        volumes = {
            INPUT: (interpolated, None),
            ENHANCED: (enhanced, None),
            DIFFERENCE: (difference, None),
            OVERLAY: (enhanced, overlayForeground if overlayForeground is not None else interpolated),
        }
        for tag, (background, foreground) in volumes.items():
            composite = self.compositeNode(tag)
            with slicer.util.NodeModify(composite):
                composite.SetBackgroundVolumeID(background.GetID() if background else None)
                composite.SetForegroundVolumeID(foreground.GetID() if foreground else None)
                composite.SetForegroundOpacity(OVERLAY_OPACITY if foreground else 0.0)
                composite.SetLabelVolumeID(None)
                composite.SetLinkedControl(True)
                composite.SetDoPropagateVolumeSelection(False)
        if legend is not None:
            legend.RemoveAllViewNodeIDs()
            legend.AddViewNodeID(self.sliceNode(DIFFERENCE).GetID())
        self.fit()

    def showSegmentations(self, inputSegmentation, outputSegmentation, showInput: bool = True) -> None:
        """Each segmentation only in its own view: the output's in Overlay (over the enhanced volume
        alone, no blended input), the input's in Input (hidden when `showInput` is False)."""
        pairs = ((outputSegmentation, OVERLAY, True), (inputSegmentation, INPUT, showInput))
        for node, tag, visible in pairs:
            display = node.GetDisplayNode()
            display.SetViewNodeIDs([self.sliceNode(tag).GetID()])
            display.SetVisibility(bool(visible))
        composite = self.compositeNode(OVERLAY)
        with slicer.util.NodeModify(composite):
            composite.SetForegroundVolumeID(None)
            composite.SetForegroundOpacity(0.0)

    def sliceLogic(self, tag: str):
        if self.applicationLogic is None:
            return None
        return self.applicationLogic.GetSliceLogic(self.sliceNode(tag))

    def fit(self) -> None:
        """Fit every view to its background volume, then give all views the enhanced view's position."""
        for view in VIEWS:
            logic = self.sliceLogic(view.tag)
            if logic is not None:
                logic.FitSliceToBackground()
        self.synchronize(ENHANCED)

    def synchronize(self, sourceTag: str = ENHANCED) -> None:
        """Give the other views the slice plane and zoom (mm per pixel) of one view.

        Linked control does this on every later interaction; this sets the starting point, also for
        views of different pixel sizes.
        """
        source = self.sliceNode(sourceTag)
        fov, dims = source.GetFieldOfView(), source.GetDimensions()
        mmPerPixel = fov[0] / max(1, dims[0])
        for view in VIEWS:
            target = self.sliceNode(view.tag)
            if target is None or target is source:
                continue
            width, height, _ = target.GetDimensions()
            with slicer.util.NodeModify(target):
                target.GetSliceToRAS().DeepCopy(source.GetSliceToRAS())
                target.SetFieldOfView(mmPerPixel * width, mmPerPixel * height, fov[2])
                target.SetXYZOrigin(*source.GetXYZOrigin())
                target.UpdateMatrices()

    def setOrientation(self, orientation: str) -> None:
        """Axial, Coronal or Sagittal in all four views at once, then refit."""
        if orientation not in ORIENTATIONS:
            raise ValueError(f"unknown orientation {orientation!r}: use one of {', '.join(ORIENTATIONS)}")
        for view in VIEWS:
            sliceNode = self.sliceNode(view.tag)
            if sliceNode is not None:
                sliceNode.SetOrientation(orientation)
        self.fit()

    def orientation(self) -> Optional[str]:
        sliceNode = self.sliceNode(ENHANCED)
        return sliceNode.GetOrientation() if sliceNode is not None else None

    def isActive(self) -> bool:
        return self.layoutNode().GetViewArrangement() == LAYOUT_ID

    def restorePreviousLayout(self) -> bool:
        """Go back to the layout that was shown before the comparison; False when there is none."""
        layoutNode = self.layoutNode()
        previous = layoutNode.GetAttribute(PREVIOUS_LAYOUT_ATTRIBUTE)
        if not previous or layoutNode.GetViewArrangement() != LAYOUT_ID:
            return False
        layoutNode.SetViewArrangement(int(previous))
        return True
