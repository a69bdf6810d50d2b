"""Iterative back-projection toward the acquired slices: it must raise consistency, keep the grid, and
help on the one real scan (no contrast change) while being refused out of range."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.imaging.backprojection import MAX_ITERATIONS, back_project, check_iterations
from mrisr.evaluation.benchmarks.realscan import anatomical_path
from mrisr.simulation.degradation import DegradationConfig, degrade
from mrisr.errors import InputError
from mrisr.evaluation.metrics import consistency, psnr
from mrisr.pipeline import EnhanceOptions, enhance


@pytest.fixture(scope="module")
def real_case():
    """nibabel's real 2 mm T1 with 4 mm slices simulated (as `mrisr bench realscan` does)."""
    hr = sitk.Cast(sitk.ReadImage(str(anatomical_path())), sitk.sitkFloat32)[:, :, :24]
    lr = degrade(hr, DegradationConfig(slice_thickness=4.0, snr=30.0, noise="rician", seed=5))
    return hr, lr


def test_iterations_checked():
    check_iterations(0)
    check_iterations(MAX_ITERATIONS)
    for bad in (-1, MAX_ITERATIONS + 1, 1.5, True):
        with pytest.raises(InputError, match="--back-projection 0 \\(off\\)"):
            check_iterations(bad)


def test_back_projection_raises_consistency_and_keeps_the_grid(real_case):
    hr, lr = real_case
    estimate = enhance(lr, EnhanceOptions(method="bspline", target_spacing=hr.GetSpacing())).image
    same = sitk.GetArrayFromImage(back_project(estimate, lr, 0))
    np.testing.assert_array_equal(same, sitk.GetArrayFromImage(estimate))
    corrected = back_project(estimate, lr, 2)
    assert (corrected.GetSize(), corrected.GetSpacing(), corrected.GetOrigin()) == \
        (estimate.GetSize(), estimate.GetSpacing(), estimate.GetOrigin())
    assert consistency(corrected, lr) > consistency(estimate, lr) + 5.0


def test_back_projection_helps_on_the_real_scan(real_case):
    """Measured: B-spline 30.1 dB → 30.8 dB with two iterations (all voxels)."""
    hr, lr = real_case
    truth = sitk.GetArrayFromImage(hr)
    scores = []
    for iterations in (0, 2):
        result = enhance(lr, EnhanceOptions(method="bspline", target_spacing=hr.GetSpacing(),
                                            back_projection=iterations))
        assert result.settings["back_projection"] == iterations
        scores.append(psnr(sitk.GetArrayFromImage(result.image), truth))
    assert scores[1] > scores[0] + 0.4
