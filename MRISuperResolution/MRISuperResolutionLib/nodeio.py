"""Volume nodes to and from files for the backend, and new volume nodes that carry their own geometry.

Grids and resampling are the backend's (`mrisr plan`, `enhance --write-interpolated`); nothing here
resamples. Only MRML and VTK are used (storage nodes), so this runs in Slicer and under the
`slicer-core` package alike. Nodes built here are added to the scene only by the caller, at the end,
so that a failure never leaves half-made nodes behind.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import slicer
import vtk

from .parameters import EnhanceError

SCALAR_VOLUME_CLASS = "vtkMRMLScalarVolumeNode"


def checkInputVolume(node, role: str = "input") -> None:
    """Refuse nodes the backend cannot enhance: none, labelmaps, vector volumes, empty volumes."""
    if node is None:
        raise EnhanceError(f"no {role} volume selected: choose a scalar volume")
    if not node.IsA(SCALAR_VOLUME_CLASS) or node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise EnhanceError(f"{role} volume {node.GetName()!r} is a {node.GetClassName()}: choose a scalar (grey-level) volume")
    image = node.GetImageData()
    if image is None or min(image.GetDimensions()) < 1 or image.GetNumberOfPoints() == 0:
        raise EnhanceError(f"{role} volume {node.GetName()!r} has no voxels")
    if image.GetNumberOfScalarComponents() != 1:
        raise EnhanceError(
            f"{role} volume {node.GetName()!r} has {image.GetNumberOfScalarComponents()} components: choose a single-channel volume")


def writeVolumeFile(node, path: str) -> None:
    """Write a volume node to a file with a private storage node: the node's own storage is untouched.

    The file holds the node's local geometry (a parent transform is not hardened into it).
    """
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(0)
    if not storage.WriteData(node):
        raise EnhanceError(f"cannot write volume {node.GetName()!r} to the temporary file {path}")


def readVolumeFile(path: str):
    """A scalar volume node (not in any scene) holding the image and geometry of a file."""
    node = slicer.vtkMRMLScalarVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise EnhanceError(f"cannot read the backend's output {path}")
    return node


def roiExtent(node, roiNode) -> tuple[int, int, int, int, int, int]:
    """(i0, i1, j0, j1, k0, k1), inclusive: the voxels of `node` inside the box of a markups ROI (rotated
    or under a linear transform: the IJK box around its eight corners, clipped to the volume)."""
    toInput = vtk.vtkMatrix4x4()
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(roiNode.GetParentTransformNode(),
                                                                   node.GetParentTransformNode(), toInput):
        raise EnhanceError(f"ROI {roiNode.GetName()!r} and volume {node.GetName()!r} are related by a non-linear "
                           "transform: harden it first")
    rasToIJK = vtk.vtkMatrix4x4()
    node.GetRASToIJKMatrix(rasToIJK)
    objectToIJK = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Multiply4x4(toInput, roiNode.GetObjectToNodeMatrix(), objectToIJK)
    vtk.vtkMatrix4x4.Multiply4x4(rasToIJK, objectToIJK, objectToIJK)
    size = roiNode.GetSize()
    corners = np.array([objectToIJK.MultiplyPoint((sx * size[0] / 2, sy * size[1] / 2, sz * size[2] / 2, 1.0))[:3]
                        for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    dimensions = node.GetImageData().GetDimensions()
    low = np.maximum(np.floor(corners.min(axis=0) + 0.5), 0).astype(int)  # voxels whose centre is inside
    high = np.minimum(np.ceil(corners.max(axis=0) - 0.5), np.array(dimensions) - 1).astype(int)
    if np.any(high < low):
        raise EnhanceError(f"ROI {roiNode.GetName()!r} does not overlap volume {node.GetName()!r}: move it onto the volume")
    return int(low[0]), int(high[0]), int(low[1]), int(high[1]), int(low[2]), int(high[2])


def croppedVolume(node, roiNode):
    """A scalar volume node (not in any scene) with the voxels of `node` inside the ROI, on the same grid."""
    i0, i1, j0, j1, k0, k1 = roiExtent(node, roiNode)
    cropped = slicer.vtkMRMLScalarVolumeNode()
    shift = vtk.vtkMatrix4x4()
    for axis, start in enumerate((i0, j0, k0)):
        shift.SetElement(axis, 3, start)
    matrix = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Multiply4x4(ijkToRAS(node), shift, matrix)
    cropped.SetIJKToRASMatrix(matrix)
    slicer.util.updateVolumeFromArray(cropped, slicer.util.arrayFromVolume(node)[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1].copy())
    cropped.SetName(node.GetName())
    return cropped


def ijkToRAS(node) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


def copyVolumeContent(target, source) -> None:
    """Give `target` the image and geometry of `source` (its own spacing, origin and directions)."""
    image = vtk.vtkImageData()
    image.DeepCopy(source.GetImageData())
    target.SetIJKToRASMatrix(ijkToRAS(source))
    target.SetAndObserveImageData(image)


def volumeFromArray(array: np.ndarray, gridNode):
    """A float volume node (not in a scene) with a (k, j, i) array on `gridNode`'s grid."""
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetIJKToRASMatrix(ijkToRAS(gridNode))
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.AllocateScalars(vtk.VTK_FLOAT, 1)
    node.SetAndObserveImageData(image)
    slicer.util.arrayFromVolume(node)[:] = array
    image.Modified()
    return node


def addVolumeToScene(scene, content, name: str, node=None):
    """Put `content` (a node from the functions above) into `node`, or into a new scene node named `name`."""
    if node is None:
        node = scene.AddNewNodeByClass(SCALAR_VOLUME_CLASS, scene.GenerateUniqueName(name))
    copyVolumeContent(node, content)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def placeBeside(node, reference) -> None:
    """Put `node` next to `reference`: same subject-hierarchy parent and same parent transform (for
    transformable nodes; tables have none)."""
    if node.IsA("vtkMRMLTransformableNode"):
        node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
    scene = node.GetScene()
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if shNode is None:
        return
    referenceItem = shNode.GetItemByDataNode(reference)
    parent = shNode.GetItemParent(referenceItem) if referenceItem else shNode.GetSceneItemID()
    item = shNode.GetItemByDataNode(node)
    if item:
        shNode.SetItemParent(item, parent)
    else:
        shNode.CreateItem(parent, node)


def referencedNode(node, role: str):
    return node.GetNodeReference(role) if node is not None else None


def nodeIDs(scene) -> set:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def removeNodes(scene, nodes) -> None:
    """Remove nodes with their display and storage nodes (a rolled-back run leaves nothing behind)."""
    for node in nodes:
        if node is None or node.GetScene() is not scene:
            continue
        helpers = []
        if node.IsA("vtkMRMLDisplayableNode"):
            helpers += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        if node.IsA("vtkMRMLStorableNode"):
            helpers += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
        scene.RemoveNode(node)
        for helper in helpers:
            if helper is not None and helper.GetScene() is scene:
                scene.RemoveNode(helper)


def windowLevelOf(node) -> Optional[tuple[float, float]]:
    display = node.GetDisplayNode() if node is not None else None
    if display is None or not display.IsA("vtkMRMLScalarVolumeDisplayNode"):
        return None
    return display.GetWindow(), display.GetLevel()
