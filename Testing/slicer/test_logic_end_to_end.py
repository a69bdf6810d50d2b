"""The module logic end to end on a real slicer-core scene: a volume loaded by Slicer's reader is
enhanced by the real backend (baseline method) and the result is checked node by node."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
import vtk  # noqa: E402

from MRISuperResolutionLib import EnhanceError
from MRISuperResolutionLib import layout as lay
from MRISuperResolutionLib.difference import FALLBACK_COLOR_ATTRIBUTE, SLICER_DIVERGING_COLOR_ID
from MRISuperResolutionLib.logic import DIFFERENCE_ROLE, INPUT_ROLE, INTERPOLATED_ROLE, UNCERTAINTY_ROLE
from MRISuperResolutionLib.uncertainty import IRON_COLOR_ID


def ijkToRAS(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def expected_output_grid(path):
    """The backend's own output-grid rule applied to the input file, converted from LPS to RAS."""
    import SimpleITK as sitk
    from mrisr.imaging.geometry import Grid, finest_isotropic_spacing, grid_with_spacing

    grid = Grid.of(sitk.ReadImage(str(path)))
    out = grid_with_spacing(grid, finest_isotropic_spacing(grid))
    lpsToRAS = np.diag([-1.0, -1.0, 1.0])
    matrix = np.eye(4)
    matrix[:3, :3] = lpsToRAS @ out.direction_matrix() @ np.diag(out.spacing)
    matrix[:3, 3] = lpsToRAS @ np.asarray(out.origin)
    return out.size, matrix


def test_output_has_its_own_geometry_to_the_voxel(enhanced_world, thick_volume):
    inputNode, outputNode = enhanced_world.extra["inputNode"], enhanced_world.extra["outputNode"]
    size, matrix = expected_output_grid(thick_volume)
    assert outputNode.GetImageData().GetDimensions() == tuple(size)
    np.testing.assert_allclose(ijkToRAS(outputNode), matrix, atol=1e-4)
    assert outputNode.GetSpacing() == pytest.approx((1.0, 1.0, 1.0), abs=1e-5)
    assert inputNode.GetSpacing() == pytest.approx((1.0, 1.0, 4.0), abs=1e-5)
    inputDirections, outputDirections = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    inputNode.GetIJKToRASDirectionMatrix(inputDirections)
    outputNode.GetIJKToRASDirectionMatrix(outputDirections)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(outputDirections),
                               slicer.util.arrayFromVTKMatrix(inputDirections), atol=1e-5)
    inputBounds, outputBounds = [0.0] * 6, [0.0] * 6
    inputNode.GetRASBounds(inputBounds)
    outputNode.GetRASBounds(outputBounds)
    np.testing.assert_allclose(outputBounds, inputBounds, atol=1.0)  # same field of view, within a voxel


def test_intensities_stay_in_the_input_range(enhanced_world):
    inputNode, outputNode = enhanced_world.extra["inputNode"], enhanced_world.extra["outputNode"]
    source = slicer.util.arrayFromVolume(inputNode)
    result = slicer.util.arrayFromVolume(outputNode)
    assert np.isfinite(result).all()
    span = float(source.max() - source.min())
    # linear interpolation never leaves the input's range (up to float32 round-off of the normalisation)
    assert source.min() - 1e-4 * span <= result.min() and result.max() <= source.max() + 1e-4 * span
    assert result.mean() == pytest.approx(source.mean(), rel=0.05)
    interpolated = slicer.util.arrayFromVolume(outputNode.GetNodeReference(INTERPOLATED_ROLE))
    # B-spline overshoot at the sharp edges of 4 mm slices stays small
    assert source.min() - 0.2 * span <= interpolated.min() and interpolated.max() <= source.max() + 0.2 * span


def test_the_input_view_shows_the_backends_bspline_interpolation(enhanced_world, thick_volume, tmp_path):
    """The Input view's volume is the backend's B-spline of the input on the output grid: the image the
    input's tissue segmentation is made from (mrisr.imaging.geometry.interpolated_input)."""
    import SimpleITK as sitk
    from mrisr.imaging.geometry import Grid, resample
    from MRISuperResolutionLib import nodeio

    outputNode = enhanced_world.extra["outputNode"]
    interpolated = outputNode.GetNodeReference(INTERPOLATED_ROLE)
    np.testing.assert_allclose(ijkToRAS(interpolated), ijkToRAS(outputNode), atol=1e-5)
    path = str(tmp_path / "enhanced.nii")
    nodeio.writeVolumeFile(outputNode, path)
    expected = resample(sitk.ReadImage(str(thick_volume)), Grid.of(sitk.ReadImage(path)), "bspline")
    np.testing.assert_allclose(slicer.util.arrayFromVolume(interpolated), sitk.GetArrayFromImage(expected),
                               atol=1e-3 * float(sitk.GetArrayFromImage(expected).max()))


def test_nodes_added_and_placed_beside_the_input(enhanced_world):
    extra = enhanced_world.extra
    inputNode, outputNode, scene = extra["inputNode"], extra["outputNode"], enhanced_world.scene
    interpolated = outputNode.GetNodeReference(INTERPOLATED_ROLE)
    differenceNode = outputNode.GetNodeReference(DIFFERENCE_ROLE)
    assert outputNode.GetName() == "T1 thick enhanced (linear)"
    assert interpolated.GetName() == "T1 thick interpolated"
    assert differenceNode.GetName() == "T1 thick enhanced (linear) difference"
    assert outputNode.GetNodeReference(INPUT_ROLE) is inputNode
    added_volumes = {nid for nid in extra["added"] if scene.GetNodeByID(nid).IsA("vtkMRMLScalarVolumeNode")}
    assert added_volumes == {outputNode.GetID(), interpolated.GetID(), differenceNode.GetID()}
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    for node in (outputNode, interpolated, differenceNode):
        assert shNode.GetItemParent(shNode.GetItemByDataNode(node)) == extra["folder"]
    assert outputNode.GetAttribute("MRISuperResolution.Method") == "linear"
    assert json.loads(outputNode.GetAttribute("MRISuperResolution.Parameters"))["method"] == "linear"
    assert slicer.util.arrayFromVolume(inputNode).shape[0] * 4 == slicer.util.arrayFromVolume(interpolated).shape[0]
    assert inputNode.GetStorageNode().GetFileName().endswith("thick.nii.gz")  # the input's storage is untouched
    assert os.listdir(enhanced_world.tempRoot) == []


def test_difference_map_is_enhanced_minus_interpolated_with_diverging_symmetric_display(enhanced_world):
    outputNode, scene = enhanced_world.extra["outputNode"], enhanced_world.scene
    interpolated = outputNode.GetNodeReference(INTERPOLATED_ROLE)
    differenceNode = outputNode.GetNodeReference(DIFFERENCE_ROLE)
    values = slicer.util.arrayFromVolume(differenceNode)
    np.testing.assert_allclose(values, slicer.util.arrayFromVolume(outputNode) - slicer.util.arrayFromVolume(interpolated),
                               atol=1e-4)
    assert values.min() < 0 < values.max()
    display = differenceNode.GetDisplayNode()
    colorNode = display.GetColorNode()
    # Slicer's DivergingBlueRed table is file-based and not shipped with slicer-core: the fallback is used here.
    assert display.GetColorNodeID() == SLICER_DIVERGING_COLOR_ID or colorNode.GetAttribute(FALLBACK_COLOR_ATTRIBUTE) == "1"
    low, middle, high = (colorNode.GetLookupTable().GetTableValue(i)[:3] for i in (0, 128, 255))
    assert low[2] > low[0] and high[0] > high[2] and min(middle) > 0.9  # blue → white → red
    assert not display.GetAutoWindowLevel()
    assert display.GetLevel() == pytest.approx(0.0)
    assert display.GetWindow() == pytest.approx(2 * np.percentile(np.abs(values[values != 0]), 99.5), rel=1e-3)
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(differenceNode)
    assert legend is not None and legend.GetVisibility()
    assert legend.GetViewNodeIDs() == (enhanced_world.views.sliceLogic(lay.DIFFERENCE).GetSliceNode().GetID(),)
    for node in (outputNode, interpolated):  # both grey with the input's window/level, so they compare alike
        assert node.GetDisplayNode().GetColorNodeID() == "vtkMRMLColorTableNodeGrey"
        assert node.GetDisplayNode().GetWindow() == pytest.approx(enhanced_world.extra["inputNode"].GetDisplayNode().GetWindow())
    assert scene.GetNodeByID(display.GetColorNodeID()) is colorNode


def test_layout_node_holds_the_comparison_layout_and_views_show_the_right_volumes(enhanced_world):
    extra, views = enhanced_world.extra, enhanced_world.views
    outputNode = extra["outputNode"]
    layoutNode = views.layoutNode()
    assert layout_id_ok(layoutNode)
    interpolated = outputNode.GetNodeReference(INTERPOLATED_ROLE)
    differenceNode = outputNode.GetNodeReference(DIFFERENCE_ROLE)
    expected = {
        lay.INPUT: (interpolated, None), lay.ENHANCED: (outputNode, None),
        lay.DIFFERENCE: (differenceNode, None), lay.OVERLAY: (outputNode, interpolated),
    }
    for tag, (background, foreground) in expected.items():
        composite = views.sliceLogic(tag).GetSliceCompositeNode()
        assert composite.GetBackgroundVolumeID() == background.GetID(), tag
        assert composite.GetForegroundVolumeID() == (foreground.GetID() if foreground else None), tag
        assert composite.GetLinkedControl(), tag
        assert views.sliceLogic(tag).GetSliceNode().GetViewGroup() == lay.VIEW_GROUP
    overlay = views.sliceLogic(lay.OVERLAY).GetSliceCompositeNode()
    assert overlay.GetForegroundOpacity() == pytest.approx(lay.OVERLAY_OPACITY)


def layout_id_ok(layoutNode) -> bool:
    return layoutNode.GetViewArrangement() == lay.LAYOUT_ID >= 500 and layoutNode.IsLayoutDescription(lay.LAYOUT_ID)


def test_orientation_switch_linking_and_layout_restore(world, thick_volume, logic):
    """The layout alone (no backend run): any three volumes can fill the comparison views."""
    inputNode = world.loadVolume(thick_volume, "T1")
    layoutNode = world.views.layoutNode()
    layoutNode.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
    layout = logic.comparisonLayout()
    layout.show(inputNode, inputNode, inputNode)
    sliceNodes = [world.scene.GetSingletonNode(view.tag, "vtkMRMLSliceNode") for view in lay.VIEWS]
    for orientation in ("Coronal", "Sagittal", "Axial"):
        logic.setOrientation(orientation)
        assert {node.GetOrientation() for node in sliceNodes} == {orientation}
    # Linked control (Slicer's slice link logic inside the application logic) moves every view together.
    enhancedNode = sliceNodes[1]
    enhancedNode.SetInteractionFlags(slicer.vtkMRMLSliceNode.SliceToRASFlag)
    enhancedNode.SetInteracting(True)
    world.views.sliceLogic(lay.ENHANCED).SetSliceOffset(12.0)
    enhancedNode.SetInteracting(False)
    assert [world.views.sliceLogic(view.tag).GetSliceOffset() for view in lay.VIEWS] == pytest.approx([12.0] * 4)
    assert layout.isActive()
    assert logic.restorePreviousLayout()
    assert layoutNode.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView
    assert not logic.restorePreviousLayout()  # nothing more to restore
    with pytest.raises(ValueError, match="unknown orientation"):
        logic.setOrientation("Oblique")


def test_console_api_blocking_then_non_blocking_with_callbacks_reusing_the_output(world, thick_volume, catalog):
    from MRISuperResolutionLib import EnhanceLogic

    slicer.mrmlScene = world.scene  # the console logic works on the application's scene
    logic = EnhanceLogic(tempRoot=str(world.tempRoot), applicationLogic=world.appLogic)
    logic.setMethodCatalog(catalog)
    assert logic.scene is world.scene
    inputNode = world.loadVolume(thick_volume, "T1")
    transform = world.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    inputNode.SetAndObserveTransformNodeID(transform.GetID())
    first = logic.enhance(inputNode, method="linear", targetSpacing=(2.0, 2.0, 2.0))
    assert first.GetScene() is world.scene and first.GetSpacing() == pytest.approx((2.0, 2.0, 2.0))
    for node in (first, first.GetNodeReference(INTERPOLATED_ROLE), first.GetNodeReference(DIFFERENCE_ROLE)):
        assert node.GetTransformNodeID() == transform.GetID()  # stays aligned with the transformed input
    differenceNode = first.GetNodeReference(DIFFERENCE_ROLE)
    volumesBefore = volumeIDs(world)
    seen, finished = [], []
    job = logic.enhance(inputNode, method="nearest", targetSpacing=(1.5, 1.5, 1.5), outputNode=first,
                        blocking=False, onProgress=lambda j: seen.append((j.progress.stage, j.fraction)),
                        onFinished=finished.append, showResults=True)
    assert job.running
    assert job.wait() is first
    assert finished == [job] and job.state == "succeeded" and job.seconds > 0
    assert {"load", "save"} <= {update.stage for update in job.updates}  # every line, not just the polled ones
    assert seen and seen[-1][1] == 1.0
    assert [f for _, f in seen] == sorted(f for _, f in seen)  # monotonic overall progress
    assert volumeIDs(world) == volumesBefore  # the same output, interpolated and difference nodes were reused
    assert first.GetNodeReference(DIFFERENCE_ROLE) is differenceNode
    assert first.GetSpacing() == pytest.approx((1.5, 1.5, 1.5))
    assert first.GetAttribute("MRISuperResolution.Method") == "nearest"
    assert layout_id_ok(world.views.layoutNode())
    assert "finished" in job.statusText()


def volumeIDs(world) -> set[str]:
    return {nid for nid in world.nodeIDs() if world.scene.GetNodeByID(nid).IsA("vtkMRMLVolumeNode")}


def test_refuses_bad_inputs_before_starting_anything(world, thick_volume, logic):
    inputNode = world.loadVolume(thick_volume, "T1")
    labelmap = world.volumesLogic.AddArchetypeVolume(str(thick_volume), "labels", 1)
    before = world.nodeIDs()
    cases = [
        (dict(inputNode=None), "no input volume"),
        (dict(inputNode=labelmap), "LabelMapVolumeNode"),
        (dict(inputNode=inputNode, method="magic"), "unknown method 'magic'"),
        (dict(inputNode=inputNode, method="bspline", steps=10), "takes no --steps"),
        (dict(inputNode=inputNode, method="bspline", outputNode=inputNode), "must differ"),
        (dict(inputNode=inputNode, method="bspline", samples=2), "deterministic"),
        (dict(inputNode=inputNode, method="ressrdiff", samples=0), "samples 0 is out of range"),
        (dict(inputNode=inputNode, method="bspline", backProjection=-1), "back-projection -1 is out of range"),
        (dict(inputNode=inputNode, method="diffusioniqt", patchSize=20), "patch size 20 is out of range"),
        (dict(inputNode=inputNode, method="bspline", targetSpacing=(0.01, 0.01, 0.01)), "budget"),
    ]
    for kwargs, message in cases:
        with pytest.raises(EnhanceError, match=message):
            logic.enhance(**kwargs)
    assert world.nodeIDs() == before
    assert os.listdir(world.tempRoot) == []


def test_several_samples_give_the_mean_and_an_uncertainty_volume_replaced_on_rerun(world, thick_volume, logic):
    inputNode = world.loadVolume(thick_volume, "T1")
    options = dict(method="ressrdiff", steps=1, targetSpacing=(2.0, 2.0, 2.0), samples=2)
    outputNode = logic.enhance(inputNode, **options)
    uncertainty = logic.uncertaintyNode(outputNode)
    assert uncertainty is outputNode.GetNodeReference(UNCERTAINTY_ROLE) and uncertainty.GetName() == "T1 enhanced (ressrdiff, 1 step) uncertainty"
    np.testing.assert_allclose(ijkToRAS(uncertainty), ijkToRAS(outputNode), atol=1e-4)
    spread, values = slicer.util.arrayFromVolume(uncertainty), slicer.util.arrayFromVolume(outputNode)
    head = values > 0.2 * values.max()
    assert spread.min() >= 0 and 0 < np.median(spread[head]) < 0.2 * values[head].mean()
    display = uncertainty.GetDisplayNode()
    assert display.GetColorNodeID() == IRON_COLOR_ID and display.GetWindow() > 0
    assert display.GetLevel() == pytest.approx(display.GetWindow() / 2)
    assert json.loads(outputNode.GetAttribute("MRISuperResolution.Parameters"))["samples"] == 2
    volumesBefore = volumeIDs(world)
    assert logic.enhance(inputNode, outputNode=outputNode, **options | {"seed": 1}) is outputNode
    assert logic.uncertaintyNode(outputNode) is not uncertainty and uncertainty.GetScene() is None  # replaced
    assert len(volumeIDs(world)) == len(volumesBefore)


def test_back_projection_makes_the_output_agree_with_the_acquired_slices(world, thick_volume, logic, tmp_path):
    import SimpleITK as sitk
    from mrisr.evaluation.metrics import consistency
    from MRISuperResolutionLib import nodeio

    inputNode = world.loadVolume(thick_volume, "T1")
    acquired = sitk.ReadImage(str(thick_volume))
    scores = {}
    for iterations in (0, 2):
        outputNode = logic.enhance(inputNode, method="bspline", targetSpacing=(2.0, 2.0, 2.0),
                                   backProjection=iterations)
        assert json.loads(outputNode.GetAttribute("MRISuperResolution.Parameters"))["backProjection"] == iterations
        path = os.path.join(str(tmp_path), f"out{iterations}.nii")
        nodeio.writeVolumeFile(outputNode, path)  # the same writer that hands volumes to the backend
        scores[iterations] = consistency(sitk.ReadImage(path), acquired)
    assert scores[2] > scores[0] + 3.0
