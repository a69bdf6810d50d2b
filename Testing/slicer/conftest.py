"""Fixtures for the Slicer module tests (real MRML from the slicer-core package; see mrisr_slicer_testing).

Nothing here imports slicer at collection time: without slicer-core the tests skip instead of erroring.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MODULE_DIR = HERE.parents[1] / "MRISuperResolution"
for folder in (str(MODULE_DIR), str(HERE)):
    if folder not in sys.path:
        sys.path.insert(0, folder)


def _harness():
    pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
    import mrisr_slicer_testing

    return mrisr_slicer_testing


@pytest.fixture
def world(tmp_path):
    world = _harness().makeWorld(tmp_path / "slicer-temp")
    yield world
    world.close()


@pytest.fixture(scope="session")
def thick_volume(tmp_path_factory) -> Path:
    """A thick-slice (1 × 1 × 4 mm) cut of the MNI152 template with an oblique direction, as NIfTI."""
    pytest.importorskip("SimpleITK")
    return _harness().writeThickVolume(tmp_path_factory.mktemp("volumes") / "thick.nii.gz")


@pytest.fixture(scope="session")
def catalog():
    _harness()
    from MRISuperResolutionLib.dependencies import loadCatalog

    return loadCatalog(sys.executable)


@pytest.fixture
def logic(world, catalog):
    return _harness().makeLogic(world, catalog)


@pytest.fixture(scope="session")
def enhanced_world(tmp_path_factory, thick_volume, catalog):
    """One baseline (linear) enhancement shown in the comparison layout, shared by read-only tests; linear,
    so that it differs from the B-spline interpolated input the Input view shows."""
    harness = _harness()
    world = harness.makeWorld(tmp_path_factory.mktemp("enhanced") / "slicer-temp")
    inputNode = world.loadVolume(thick_volume, "T1 thick")
    folder = world.inStudyFolder(inputNode)
    logic = harness.makeLogic(world, catalog)
    previousLayout = world.views.layoutNode().GetViewArrangement()
    before = world.nodeIDs()
    outputNode = logic.enhance(inputNode, method="linear")
    added = world.nodeIDs() - before
    logic.showComparison(outputNode)
    world.extra.update(inputNode=inputNode, outputNode=outputNode, logic=logic, folder=folder, added=added,
                       previousLayout=previousLayout)
    yield world
    world.close()
