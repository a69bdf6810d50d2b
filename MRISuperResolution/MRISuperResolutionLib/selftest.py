"""The module's self-test ("Reload and Test" in Slicer): what can run, runs; what cannot is named.

It never passes by testing nothing: the difference map and the comparison layout need no backend and
always run; B-spline through the backend runs whenever the backend is installed (it needs no torch); a
learned method (the Balanced preset) runs when torch is there too. Every skipped part is reported with
its reason, in the report and in the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import slicer

from . import difference as diff
from .layout import LAYOUT_ID

log = logging.getLogger(__name__)

BALL_SHAPE = (12, 48, 40)  # (k, j, i): 40 × 48 × 12 voxels of 1 × 1 × 4 mm
BALL_SPACING = (1.0, 1.0, 4.0)
BALL_VALUE = 100.0


class SelfTestFailure(AssertionError):
    """A check of the self-test failed."""


@dataclass
class SelfTestReport:
    ran: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (part, why)

    def summary(self) -> str:
        lines = [f"ran: {', '.join(self.ran) or 'nothing'}"]
        lines += [f"skipped {part}: {why}" for part, why in self.skipped]
        return "\n".join(lines)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SelfTestFailure(message)


def ballVolume(scene, name: str = "self-test ball"):
    """A thick-slice volume of an ellipsoid (value 100 inside, 0 outside)."""
    k, j, i = np.mgrid[0:BALL_SHAPE[0], 0:BALL_SHAPE[1], 0:BALL_SHAPE[2]]
    ball = (((i - 20) / 16.0) ** 2 + ((j - 24) / 20.0) ** 2 + ((k - 6) / 5.0) ** 2 < 1).astype(np.float32)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetSpacing(*BALL_SPACING)
    slicer.util.updateVolumeFromArray(node, BALL_VALUE * ball)
    node.CreateDefaultDisplayNodes()
    return node


def checkDifferenceMap(scene) -> None:
    """enhanced − interpolated on a known pair: values, symmetric window around 0 and diverging colours."""
    enhanced = np.zeros((4, 5, 6), np.float32)
    enhanced[1, 2, 3], enhanced[2, 2, 2] = 10.0, -4.0
    values = diff.differenceArray(enhanced, np.zeros_like(enhanced))
    _check(values[1, 2, 3] == 10.0 and values[2, 2, 2] == -4.0, "the difference map is not enhanced − interpolated")
    window = diff.symmetricWindow(values, percentile=100.0)
    _check(window == 20.0, f"the difference window is {window}, not 2 × the largest |difference| (20)")
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "self-test difference")
    slicer.util.updateVolumeFromArray(node, values)
    node.CreateDefaultDisplayNodes()
    diff.showAsDifference(node, window)
    display = node.GetDisplayNode()
    _check(display.GetLevel() == 0.0 and display.GetWindow() == window, "the difference map is not centred on 0")
    colors = diff.divergingColors(3)
    _check(colors[0, 2] > colors[0, 0] and colors[2, 0] > colors[2, 2] and np.allclose(colors[1], colors[1][0], atol=0.05),
           "the difference colours are not blue – white – red")


def checkLayout(logic, inputNode) -> None:
    """The comparison layout shows four linked views and gives the user's layout back."""
    layout = logic.comparisonLayout()
    before = layout.layoutNode().GetViewArrangement()
    layout.show(inputNode, inputNode, inputNode)
    _check(layout.layoutNode().GetViewArrangement() == LAYOUT_ID, "the comparison layout was not shown")
    _check(logic.restorePreviousLayout() and layout.layoutNode().GetViewArrangement() == before,
           "the previous layout was not restored")


def checkEnhancement(logic, inputNode, **options):
    """A run through the backend: the output has its own finer grid, intensities stay in the input's range."""
    output = logic.enhance(inputNode, showResults=True, **options)
    dimensions = output.GetImageData().GetDimensions()
    _check(dimensions == (BALL_SHAPE[2], BALL_SHAPE[1], BALL_SHAPE[0] * 4),
           f"{options}: output of {dimensions} voxels, not 40 × 48 × 48")
    _check(tuple(round(s, 4) for s in output.GetSpacing()) == (1.0, 1.0, 1.0), f"{options}: output spacing is not 1 mm")
    values = slicer.util.arrayFromVolume(output)
    _check(values.max() > 0.5 * BALL_VALUE, f"{options}: the ball is gone from the output")
    _check(logic.comparisonLayout().layoutNode().GetViewArrangement() == LAYOUT_ID, "the result was not shown")
    return output


def runSelfTest(logic, status=None, say: Optional[Callable[[str], None]] = None) -> SelfTestReport:
    """Run every part that can run with this backend `status` (dependencies.BackendStatus; None: ask the
    logic's interpreter); raises SelfTestFailure on a wrong result, EnhanceError on a failed run."""
    say = say or log.info
    report = SelfTestReport()
    scene = logic.scene
    checkDifferenceMap(scene)
    report.ran.append("difference map")
    inputNode = ballVolume(scene)
    checkLayout(logic, inputNode)
    report.ran.append("layout")
    if status is None:
        from .dependencies import probeBackend

        status = probeBackend(logic.python())
    if status.catalog is None:
        why = status.summary()
        report.skipped += [("B-spline through the backend", why), ("learned method", why)]
    else:
        logic.setMethodCatalog(status.catalog)
        checkEnhancement(logic, inputNode, method="bspline")
        report.ran.append("B-spline through the backend")
        if status.ready:
            preset = next((p for p in logic.presets() if p.name == "Balanced" and p.method != "bspline"), None)
            if preset is None:
                report.skipped.append(("learned method", "the backend has no learned method without a reference"))
            else:
                checkEnhancement(logic, inputNode, method=preset.method, steps=preset.steps)
                report.ran.append(f"learned method ({preset.method})")
        else:
            report.skipped.append(("learned method", status.summary()))
    for part, why in report.skipped:
        say(f"MRISuperResolution self-test skipped {part}: {why}")
    say(f"MRISuperResolution self-test ran: {', '.join(report.ran)}")
    return report

