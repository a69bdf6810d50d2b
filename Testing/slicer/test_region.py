"""Enhance a region: a markups ROI limits the run to the input's voxels inside it (the input is cropped on
the Lib side before it is written for the backend). The output covers the ROI only, on the grid a whole
run would use, with the same values there, and says so in its name."""

from __future__ import annotations

import numpy as np
import pytest
slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
import vtk  # noqa: E402

from MRISuperResolutionLib import EnhanceError, nodeio  # noqa: E402


def ras_of_voxels(node, ijk: np.ndarray) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    m = slicer.util.arrayFromVTKMatrix(matrix)
    return (m[:3, :3] @ ijk.T).T + m[:3, 3]


def voxel_corners(node) -> np.ndarray:
    i, j, k = (d - 1 for d in node.GetImageData().GetDimensions())
    return np.array([(a, b, c) for a in (0, i) for b in (0, j) for c in (0, k)], float)


@pytest.fixture
def roi(world):
    node = world.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "region")
    return node


def test_a_region_run_covers_the_roi_with_the_values_of_a_whole_run(world, thick_volume, logic, roi):
    inputNode = world.loadVolume(thick_volume, "T1")
    bounds = [0.0] * 6
    inputNode.GetRASBounds(bounds)
    centre = [(bounds[2 * a] + bounds[2 * a + 1]) / 2 for a in range(3)]
    roi.SetCenter(*centre)
    roi.SetSize(50.0, 40.0, 30.0)
    whole = logic.enhance(inputNode, method="linear")
    region = logic.enhance(inputNode, method="linear", roiNode=roi)
    assert region.GetName() == "T1 enhanced (linear, region)" and region.GetAttribute("MRISuperResolution.Region") == roi.GetID()
    wholeVoxels = np.prod(whole.GetImageData().GetDimensions())
    assert np.prod(region.GetImageData().GetDimensions()) < wholeVoxels / 4  # much less work
    # in the (oblique) input's voxel frame the output lies inside the box around the ROI's corners
    toInput = vtk.vtkMatrix4x4()
    inputNode.GetRASToIJKMatrix(toInput)
    toInput = slicer.util.arrayFromVTKMatrix(toInput)
    roiCorners = np.array([[centre[0] + sx * 25.0, centre[1] + sy * 20.0, centre[2] + sz * 15.0, 1.0]
                           for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    roiBox = (toInput @ roiCorners.T).T[:, :3]
    outputCorners = (toInput @ np.hstack([ras_of_voxels(region, voxel_corners(region)), np.ones((8, 1))]).T).T[:, :3]
    assert np.all(outputCorners.min(axis=0) >= roiBox.min(axis=0) - 1.0)
    assert np.all(outputCorners.max(axis=0) <= roiBox.max(axis=0) + 1.0)
    assert np.all(outputCorners.max(axis=0) - outputCorners.min(axis=0) >= roiBox.max(axis=0) - roiBox.min(axis=0) - 2.0)
    assert region.GetSpacing() == pytest.approx(whole.GetSpacing())
    # the same grid as the whole run, shifted by whole voxels: compare away from the crop's edges
    toWhole = vtk.vtkMatrix4x4()
    whole.GetRASToIJKMatrix(toWhole)
    offset = slicer.util.arrayFromVTKMatrix(toWhole) @ np.append(ras_of_voxels(region, np.zeros((1, 3)))[0], 1.0)
    assert offset[:3] == pytest.approx(np.round(offset[:3]), abs=1e-3)
    i0, j0, k0 = np.round(offset[:3]).astype(int)
    values, reference = slicer.util.arrayFromVolume(region), slicer.util.arrayFromVolume(whole)
    nk, nj, ni = values.shape
    inner = (slice(6, nk - 6), slice(6, nj - 6), slice(6, ni - 6))
    expected = reference[k0:k0 + nk, j0:j0 + nj, i0:i0 + ni][inner]
    assert values[inner] == pytest.approx(expected, abs=1e-3 * float(np.abs(reference).max()))


def test_a_roi_outside_the_volume_is_refused_before_anything_runs(world, thick_volume, logic, roi):
    inputNode = world.loadVolume(thick_volume, "T1")
    roi.SetCenter(5000.0, 0.0, 0.0)
    roi.SetSize(10.0, 10.0, 10.0)
    before = world.nodeIDs()
    with pytest.raises(EnhanceError, match="does not overlap"):
        logic.enhance(inputNode, method="nearest", roiNode=roi)
    assert world.nodeIDs() == before


def test_the_crop_keeps_the_voxels_and_their_positions(world, thick_volume, roi):
    inputNode = world.loadVolume(thick_volume, "T1")
    roi.SetCenter(*ras_of_voxels(inputNode, np.array([[30.0, 40.0, 5.0]]))[0])
    roi.SetSize(12.0, 12.0, 12.0)
    cropped = nodeio.croppedVolume(inputNode, roi)
    i0, i1, j0, j1, k0, k1 = nodeio.roiExtent(inputNode, roi)
    assert i0 <= 30 <= i1 and j0 <= 40 <= j1 and k0 <= 5 <= k1
    assert slicer.util.arrayFromVolume(cropped) == pytest.approx(
        slicer.util.arrayFromVolume(inputNode)[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1])
    assert ras_of_voxels(cropped, np.zeros((1, 3))) == pytest.approx(ras_of_voxels(inputNode, np.array([[i0, j0, k0]], float)))
    assert cropped.GetImageData().GetScalarType() == inputNode.GetImageData().GetScalarType()
