"""Tissue segmentation overlays on a real slicer-core scene: one segmentation node for the interpolated
input and one for the enhanced output, each visible only in its own comparison view, and an agreement
table whose volumes match the segmentations' own voxels."""

from __future__ import annotations

import numpy as np
import pytest
pytest.importorskip("slicer", reason="slicer-core is not installed")

import slicer
import vtk
from vtk.util.numpy_support import vtk_to_numpy

from MRISuperResolutionLib import EnhanceError, tissues
from MRISuperResolutionLib.layout import INPUT, OVERLAY

TISSUE_NAMES = ["Cerebrospinal fluid", "Grey matter", "White matter"]


@pytest.fixture(scope="module")
def segmented(tmp_path_factory, thick_volume, catalog):
    """A bspline enhancement with segment=True, shown in the comparison layout."""
    import mrisr_slicer_testing as harness

    world = harness.makeWorld(tmp_path_factory.mktemp("segmented") / "slicer-temp")
    inputNode = world.loadVolume(thick_volume, "T1 thick")
    logic = harness.makeLogic(world, catalog)
    before = world.nodeIDs()
    outputNode = logic.enhance(inputNode, method="bspline", segment=True)
    world.extra.update(inputNode=inputNode, outputNode=outputNode, logic=logic, added=world.nodeIDs() - before,
                       layout=logic.showComparison(outputNode))
    yield world
    world.close()


def segment_voxels(segmentationNode, name: str) -> tuple[int, float]:
    """(voxel count, voxel volume in mm³) of one segment, read from its binary labelmap."""
    segmentation = segmentationNode.GetSegmentation()
    segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(name))
    image = segment.GetRepresentation("Binary labelmap")
    values = vtk_to_numpy(image.GetPointData().GetScalars())
    return int((values == segment.GetLabelValue()).sum()), float(np.prod(image.GetSpacing()))


def test_two_segmentation_nodes_with_named_coloured_coded_segments(segmented):
    logic, outputNode = segmented.extra["logic"], segmented.extra["outputNode"]
    inputSeg, outputSeg = logic.segmentationNodes(outputNode)
    assert inputSeg is not None and outputSeg is not None and inputSeg is not outputSeg
    added = segmented.extra["added"]
    assert {inputSeg.GetID(), outputSeg.GetID(), logic.tissueTable(outputNode).GetID()} <= added
    for node in (inputSeg, outputSeg):
        segmentation = node.GetSegmentation()
        names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
        assert names == TISSUE_NAMES
        white = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("White matter"))
        assert white.GetColor() == pytest.approx((0.96, 0.90, 0.35), abs=1e-3)
        tag = vtk.reference("")
        assert white.GetTag("TerminologyEntry", tag) and "SCT^389080008^White matter" in str(tag)
    assert inputSeg.GetName() == "T1 thick interpolated tissues"
    assert outputSeg.GetName() == "T1 thick enhanced (bspline) tissues"


def test_each_segmentation_is_visible_only_in_its_own_view(segmented):
    logic, outputNode, layout = (segmented.extra[k] for k in ("logic", "outputNode", "layout"))
    inputSeg, outputSeg = logic.segmentationNodes(outputNode)
    assert list(outputSeg.GetDisplayNode().GetViewNodeIDs()) == [layout.sliceNode(OVERLAY).GetID()]
    assert list(inputSeg.GetDisplayNode().GetViewNodeIDs()) == [layout.sliceNode(INPUT).GetID()]
    overlay = layout.compositeNode(OVERLAY)
    assert overlay.GetBackgroundVolumeID() == outputNode.GetID() and overlay.GetForegroundVolumeID() is None
    logic.setInputSegmentationVisible(outputNode, False)
    assert not inputSeg.GetDisplayNode().GetVisibility() and outputSeg.GetDisplayNode().GetVisibility()
    logic.setInputSegmentationVisible(outputNode, True)
    assert inputSeg.GetDisplayNode().GetVisibility()


def test_agreement_table_matches_the_segmentations(segmented):
    logic, outputNode = segmented.extra["logic"], segmented.extra["outputNode"]
    table = logic.tissueTable(outputNode)
    assert [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())] == \
        ["Tissue", "Input (mL)", "Enhanced (mL)", "Dice"]
    assert [table.GetCellText(r, 0) for r in range(table.GetNumberOfRows())] == TISSUE_NAMES
    inputSeg, outputSeg = logic.segmentationNodes(outputNode)
    for row, name in enumerate(TISSUE_NAMES):
        for column, node in ((1, inputSeg), (2, outputSeg)):
            count, voxel = segment_voxels(node, name)
            assert float(table.GetCellText(row, column)) == pytest.approx(count * voxel / 1000, rel=1e-3, abs=0.01)
        # B-spline "enhancement" is the B-spline-interpolated input: both segment the same image
        assert float(table.GetCellText(row, 3)) >= 0.99
    assert float(table.GetCellText(2, 2)) > 1.0  # some white matter was found


def test_toggle_without_segmentation_is_a_clear_error(world, thick_volume, logic):
    inputNode = world.loadVolume(thick_volume, "T1")
    outputNode = logic.enhance(inputNode, method="nearest")
    assert logic.segmentationNodes(outputNode) == (None, None) and logic.tissueTable(outputNode) is None
    with pytest.raises(EnhanceError, match="no tissue segmentation"):
        logic.setInputSegmentationVisible(outputNode, False)


def test_a_failure_while_loading_segmentations_leaves_the_scene_unchanged(world, thick_volume, logic, monkeypatch):
    inputNode = world.loadVolume(thick_volume, "T1")
    world.inStudyFolder(inputNode)  # Slicer always has the subject hierarchy node
    before = world.nodeIDs()

    def broken(path):
        raise OSError(f"cannot read {path}")

    monkeypatch.setattr(tissues, "readReport", broken)
    with pytest.raises(EnhanceError, match="cannot read"):
        logic.enhance(inputNode, method="nearest", segment=True)
    assert world.nodeIDs() == before
