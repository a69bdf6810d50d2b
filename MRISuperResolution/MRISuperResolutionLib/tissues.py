"""Tissue segmentation results in the scene: segmentation nodes of the interpolated input and of the
enhanced output, each visible only in its own comparison view, and a table of their agreement.

The backend writes both segmentations (.seg.nrrd with segment names, colours and terminology) and a
JSON report; this module turns them into MRML nodes. Qt-free: it runs under slicer-core.
"""

from __future__ import annotations

import json
from typing import Optional

import slicer

TABLE_COLUMNS = (("label", "Tissue", "string"), ("input_ml", "Input (mL)", "double"),
                 ("output_ml", "Enhanced (mL)", "double"), ("dice", "Dice", "double"))
FILL_OPACITY_2D = 0.35


def loadSegmentation(scene, path: str, name: str):
    """A new segmentation node read from a .seg.nrrd file; the node is removed again if reading fails."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(path)
    try:
        if not storage.ReadData(node) or node.GetSegmentation().GetNumberOfSegments() == 0:
            raise RuntimeError(f"could not read the segmentation file {path}")
    except BaseException:
        scene.RemoveNode(node)
        raise
    finally:
        scene.RemoveNode(storage)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetOpacity2DFill(FILL_OPACITY_2D)
    return node


def readReport(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def fillAgreementTable(tableNode, rows: list[dict]) -> None:
    """One row per tissue: name, volume in the input and enhanced segmentations (mL), and their Dice."""
    table = tableNode.GetTable()
    with slicer.util.NodeModify(tableNode):
        tableNode.RemoveAllColumns()
        for key, title, kind in TABLE_COLUMNS:
            column = tableNode.AddColumn()
            column.SetName(title)
            if kind == "double":
                tableNode.SetColumnType(title, slicer.vtkMRMLTableNode.GetValueTypeFromString("double"))
        for row in rows:
            index = tableNode.AddEmptyRow()
            for columnIndex, (key, _, kind) in enumerate(TABLE_COLUMNS):
                value = row[key]
                tableNode.SetCellText(index, columnIndex, str(value) if kind == "string" else f"{float(value):.4g}")
    table.Modified()


def agreementTable(scene, rows: list[dict], name: str, node: Optional[object] = None):
    """A table node (new unless `node` is given) holding the agreement rows of the backend's report."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    fillAgreementTable(node, rows)
    return node
