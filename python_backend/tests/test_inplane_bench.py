"""The in-plane real-scan benchmark: a real scan (nibabel's anatomical.nii) as its own ground truth."""

import argparse

import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.errors import InputError
from mrisr.evaluation.benchmarks import inplane
from mrisr.evaluation.benchmarks.realscan import anatomical_path


def test_bspline_row_on_the_real_scan_and_the_fit_never_lowers_psnr():
    parser = argparse.ArgumentParser()
    inplane.add_arguments(parser)
    rows = inplane.run(parser.parse_args(["--methods", "bspline", "nearest"]), lambda event: None)["anatomical.nii"]
    assert rows["factor"] == 4.0 and rows["thickness_mm"] == 8.0 and rows["degraded_axis"] == 0
    bspline, nearest = rows["bspline"], rows["nearest"]
    assert 24.0 < bspline["psnr"] < 30.0 and 0.6 < bspline["ssim"] < 0.8  # 26.65 / 0.720 when written
    assert bspline["psnr"] > nearest["psnr"]
    for row in (bspline, nearest):  # a least-squares affine fit includes the identity, so it cannot lose
        assert row["psnr_linear_fit"] >= row["psnr"] - 1e-9
        assert row["self_check_flagged"] is None  # interpolation is the self-check's reference
        # the degraded input's 8 samples of 8 mm cover 64 of the scan's 66 mm: its last column is not scored
        assert 0.9 * rows["voxels_scored"] < row["voxels_scored"] < rows["voxels_scored"]


def test_output_is_scored_on_the_scans_grid_only_where_it_lies():
    scan = sitk.Cast(sitk.ReadImage(str(anatomical_path())), sitk.sitkFloat32)
    shifted = sitk.Image(scan)
    shifted.SetOrigin(np.asarray(scan.GetOrigin()) + np.array([10 * scan.GetSpacing()[0], 0, 0]))
    values, inside = inplane.on_scan_grid(shifted, scan)
    assert values.shape == inside.shape == sitk.GetArrayFromImage(scan).shape
    assert not inside[:, :, :10].any() and inside[:, :, 10:].all()


def test_reserved_scans_are_refused(tmp_path):
    path = tmp_path / "brain2_image.nrrd"
    sitk.WriteImage(sitk.Image(8, 8, 8, sitk.sitkFloat32), str(path))
    with pytest.raises(InputError, match="reserved for independent evaluation"):
        inplane.score_scan(path, ["bspline"], 0, None, lambda event: None)
