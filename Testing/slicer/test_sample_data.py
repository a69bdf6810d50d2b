"""The Sample Data module's "low-field sample": made offline by the real backend (`mrisr demo`) into a
cache folder, loaded by Slicer's own reader with the geometry of the file, reused afterwards, and
never left half-made."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest
pytest.importorskip("slicer", reason="slicer-core is not installed")
pytest.importorskip("nilearn", reason="mrisr demo needs the MNI152 template inside nilearn")
import slicer  # noqa: E402

from MRISuperResolutionLib import EnhanceError, sampledata  # noqa: E402


@pytest.fixture(scope="module")
def sample(tmp_path_factory, catalog):
    cache = tmp_path_factory.mktemp("cache")
    fractions, idles = [], []
    started = time.monotonic()
    path = sampledata.makeLowFieldSample(sys.executable, str(cache), catalog, idle=lambda: idles.append(1),
                                         onProgress=lambda fraction, text: fractions.append(fraction))
    return cache, path, fractions, idles, time.monotonic() - started


def test_the_backend_makes_a_thick_slice_sample_once(sample):
    import SimpleITK as sitk

    cache, path, fractions, idles, _ = sample
    assert path == cache / sampledata.SAMPLE_FOLDER / sampledata.LOW_FIELD_FILE and path.is_file()
    assert fractions and idles  # it reported progress and let the GUI breathe while it ran
    image = sitk.ReadImage(str(path))
    spacing = image.GetSpacing()
    assert max(spacing) >= 3 * min(spacing)  # thick slices: what the module is for
    assert sorted(os.listdir(cache)) == [sampledata.SAMPLE_FOLDER]  # no partial folder left
    assert sampledata.DEMO_OUTPUT_FILE not in os.listdir(path.parent)  # the demo's own enhancement is not kept
    started = time.monotonic()
    again = sampledata.makeLowFieldSample(str(cache / "no-such-python"), str(cache))
    assert again == path and time.monotonic() - started < 1  # reused: the backend is not asked again


def test_the_sample_loads_as_a_volume_node_with_the_files_geometry(world, sample):
    import SimpleITK as sitk

    _, path, *_ = sample
    node = sampledata.loadLowFieldSample(world.volumesLogic, path)
    assert node.IsA("vtkMRMLScalarVolumeNode") and node.GetName() == sampledata.NODE_NAME
    assert slicer.util.getNode(sampledata.NODE_NAME) is node
    image = sitk.ReadImage(str(path))
    assert node.GetImageData().GetDimensions() == image.GetSize()
    assert node.GetSpacing() == pytest.approx(image.GetSpacing())
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    assert node.GetOrigin() == pytest.approx(lps_to_ras @ np.array(image.GetOrigin()))
    directions = np.zeros((3, 3))
    node.GetIJKToRASDirections(directions)
    assert directions == pytest.approx(lps_to_ras @ np.array(image.GetDirection()).reshape(3, 3))
    assert slicer.util.arrayFromVolume(node) == pytest.approx(sitk.GetArrayFromImage(image))


@pytest.mark.skipif(os.name == "nt", reason="uses a POSIX shell script as the interpreter")
def test_a_failed_sample_leaves_nothing_to_reuse(tmp_path):
    with pytest.raises(EnhanceError, match="cannot start the backend"):
        sampledata.makeLowFieldSample(str(tmp_path / "no-such-python"), str(tmp_path / "cache"))
    assert sampledata.cachedSample(str(tmp_path / "cache")) is None
    broken = tmp_path / "python"  # an interpreter that runs, but whose backend fails
    broken.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import sys; sys.exit(\"mrisr: error: no MNI152 here\")'\n")
    broken.chmod(0o755)
    with pytest.raises(EnhanceError, match="could not be made: no MNI152 here"):
        sampledata.makeLowFieldSample(str(broken), str(tmp_path / "cache"))
    assert os.listdir(tmp_path / "cache") == []


def test_the_demo_step_uses_the_quickest_measured_method(catalog):
    method = sampledata.fastestMethod(catalog)
    rates = {m.name: m.config["seconds_per_megavoxel"]["cpu"] for m in catalog.methods}
    assert rates[method] == min(rates.values())
    assert sampledata.sampleCommand("py", "out", method)[-4:] == ["demo", "out", "--method", method]


def test_the_logic_loads_the_cached_sample_into_its_scene(world, logic, sample):
    cache, path, *_ = sample
    before = world.nodeIDs()
    node = logic.loadLowFieldSample(str(cache))
    assert node.GetScene() is world.scene and node.GetID() not in before
    assert node.GetImageData().GetDimensions() == tuple(__import__("SimpleITK").ReadImage(str(path)).GetSize())
    assert sampledata.defaultCacheDir(world.scene) is None  # slicer-core: no cache manager
    manager = slicer.vtkCacheManager()  # Slicer's: where Sample Data keeps its downloads
    manager.SetRemoteCacheDirectory(str(cache))
    world.scene.SetCacheManager(manager)
    assert sampledata.defaultCacheDir(world.scene) == str(cache)
    assert logic.loadLowFieldSample().GetName() == sampledata.NODE_NAME + "_1"  # from that cache, not made again
