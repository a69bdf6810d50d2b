"""Test harness for the Slicer module on slicer-core: real MRML scenes and logics, no application.

The Slicer application is not available here, so two of its parts are set up by hand, with real
Slicer classes: the module logics it registers at startup (Colors, Volumes, SubjectHierarchy) and
its layout manager's job of giving each slice view a vtkMRMLSliceLogic (`SliceViews` below).
Import this only after `pytest.importorskip("slicer")`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer
import vtk

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "MRISuperResolution"
ARTIFACTS = REPO / "artifacts"
VIEW_SIZE = (256, 256)


class SliceViews:
    """What Slicer's layout manager does for slice views: a slice logic for every slice node.

    Logics are registered with the application logic (as Slicer does), so `GetSliceLogic(sliceNode)`
    and slice linking work; `render(tag)` returns the view's RGB image without OpenGL.
    """

    def __init__(self, scene, appLogic, size=VIEW_SIZE) -> None:
        self.scene, self.appLogic, self.size = scene, appLogic, size
        self.logics = vtk.vtkCollection()
        appLogic.SetSliceLogics(self.logics)
        self.layoutLogic = slicer.vtkMRMLLayoutLogic()
        self.layoutLogic.SetMRMLScene(scene)
        self.update()
        self._tag = scene.AddObserver(slicer.vtkMRMLScene.NodeAddedEvent, self._onNodeAdded)

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def _onNodeAdded(self, caller, event, node) -> None:
        if node is not None and node.IsA("vtkMRMLSliceNode"):
            self._addLogic(node)

    def update(self) -> None:
        for index in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
            sliceNode = self.scene.GetNthNodeByClass(index, "vtkMRMLSliceNode")
            if self.appLogic.GetSliceLogic(sliceNode) is None:
                self._addLogic(sliceNode)

    def _addLogic(self, sliceNode) -> None:
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLScene(self.scene)
        logic.SetMRMLApplicationLogic(self.appLogic)
        logic.SetSliceNode(sliceNode)
        logic.ResizeSliceNode(*self.size)
        self.logics.AddItem(logic)

    def layoutNode(self):
        return self.layoutLogic.GetLayoutNode()

    def sliceLogic(self, tag: str):
        return self.appLogic.GetSliceLogic(self.scene.GetSingletonNode(tag, "vtkMRMLSliceNode"))

    def render(self, tag: str) -> np.ndarray:
        """The view's blended background/foreground/label image, (height, width, 3) uint8, top row first."""
        from vtk.util.numpy_support import vtk_to_numpy

        producer = self.sliceLogic(tag).GetImageDataConnection().GetProducer()
        producer.Update()
        image = producer.GetOutputDataObject(0)
        width, height, _ = image.GetDimensions()
        pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
        return np.ascontiguousarray(pixels[::-1, :, :3])

    def close(self) -> None:
        self.scene.RemoveObserver(self._tag)


@dataclass
class SlicerWorld:
    """A scene with Slicer's application logic and module logics, as Slicer sets them up at startup."""

    scene: object
    appLogic: object
    moduleLogics: dict
    views: SliceViews
    tempRoot: Path
    extra: dict = field(default_factory=dict)

    @property
    def volumesLogic(self):
        return self.moduleLogics["Volumes"]

    def nodeIDs(self) -> set[str]:
        return {self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())}

    def loadVolume(self, path: Path, name: str):
        node = self.volumesLogic.AddArchetypeVolume(str(path), name, 0)
        assert node is not None, f"Slicer could not load {path}"
        return node

    def inStudyFolder(self, node, folderName: str = "Patient 1"):
        """Put a node under a folder item, as DICOM import would (Slicer's SH plugins are Qt-only)."""
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        folder = shNode.CreateFolderItem(shNode.GetSceneItemID(), folderName)
        item = shNode.GetItemByDataNode(node) or shNode.CreateItem(folder, node)
        shNode.SetItemParent(item, folder)
        return folder

    def close(self) -> None:
        self.views.close()
        self.scene.Clear(False)  # Clear(True) crashes slicer-core 5.13 while a vtkMRMLLayoutLogic observes the scene


def makeWorld(tempRoot: Path) -> SlicerWorld:
    scene = slicer.vtkMRMLScene()
    appLogic = slicer.vtkSlicerApplicationLogic()
    appLogic.SetMRMLScene(scene)
    colorLogic = appLogic.GetColorLogic()
    colorLogic.SetMRMLApplicationLogic(appLogic)
    colorLogic.SetMRMLScene(scene)
    colorLogic.AddDefaultColorNodes()
    logics = {}
    for name, cls in (("Colors", slicer.vtkSlicerColorLogic), ("Volumes", slicer.vtkSlicerVolumesLogic),
                      ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic)):
        logic = cls()
        logic.SetMRMLApplicationLogic(appLogic)
        logic.SetMRMLScene(scene)
        appLogic.SetModuleLogic(name, logic)
        logics[name] = logic
    slicer.mrmlScene = scene
    tempRoot.mkdir(parents=True, exist_ok=True)
    return SlicerWorld(scene, appLogic, logics, SliceViews(scene, appLogic), tempRoot)


def writeThickVolume(path: Path) -> Path:
    """A thick-slice (1 × 1 × 4 mm) cut of the MNI152 template with an oblique direction, written to `path`."""
    import SimpleITK as sitk
    from mrisr.simulation.template import mni_image

    hr = mni_image("t1")[30:170, 40:190, 60:120]
    hr.SetDirection(sitk.VersorTransform((0, 0, 1), 0.2).GetMatrix())
    size = hr.GetSize()
    lr = sitk.Resample(hr, [size[0], size[1], size[2] // 4], sitk.Transform(), sitk.sitkLinear, hr.GetOrigin(),
                       (1.0, 1.0, 4.0), hr.GetDirection())
    sitk.WriteImage(lr, str(path))
    return path


def makeLogic(world: SlicerWorld, catalog):
    from MRISuperResolutionLib import EnhanceLogic

    logic = EnhanceLogic(world.scene, pythonExecutable=sys.executable, tempRoot=str(world.tempRoot),
                         applicationLogic=world.appLogic)
    logic.setMethodCatalog(catalog)
    return logic
