"""The after-run self-check: B-spline itself passes, a blurred output that ignores the input is flagged,
a sharper output that agrees with the input is not, and the coarse axis is the one measured."""

import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.evaluation.self_check import FLAG_DB, coarse_axis, self_check, through_plane_sharpness
from mrisr.imaging.geometry import Grid, grid_with_spacing, resample
from mrisr.simulation.degradation import DegradationConfig, degrade

from conftest import make_image, phantom_array


@pytest.fixture(scope="module")
def case():
    """(HR 1 mm phantom, its 4 mm-slice acquisition, the HR grid)."""
    hr = make_image(phantom_array((48, 40, 36), seed=2))
    return hr, degrade(hr, DegradationConfig(slice_thickness=4.0)), Grid.of(hr)


def test_bspline_passes_with_its_own_figures(case):
    _, lr, grid = case
    check = self_check(resample(lr, grid, "bspline"), lr)
    assert check.coarse_axis == 2 and not check.flagged
    assert check.consistency_db == pytest.approx(check.bspline_consistency_db)
    assert check.sharpness == pytest.approx(check.bspline_sharpness)


def test_blurred_output_that_disagrees_with_the_input_is_flagged(case):
    _, lr, grid = case
    smeared = sitk.SmoothingRecursiveGaussian(resample(lr, grid, "bspline"), [1.0, 1.0, 4.0])
    check = self_check(smeared * 0.8 + 10, lr)
    assert check.flagged and check.consistency_db < check.bspline_consistency_db - FLAG_DB
    assert check.sharpness < check.bspline_sharpness and "FLAGGED" in check.message


def test_the_truth_is_sharper_through_plane_and_not_flagged(case):
    hr, lr, _ = case
    check = self_check(hr, lr)
    assert not check.flagged and check.sharpness > 1.2 * check.bspline_sharpness
    assert set(check.as_dict()) >= {"consistency_db", "bspline_consistency_db", "sharpness", "flagged"}


def test_sharpness_is_measured_along_the_given_axis_only():
    array = np.zeros((8, 8, 8), dtype=np.float32)
    array[4:] = 1.0  # one step along z (numpy axis 0)
    image, mask = make_image(array, spacing=(1.0, 1.0, 2.0)), np.ones((8, 8, 8), bool)
    assert through_plane_sharpness(image, 0, mask, 1.0) == 0.0
    assert through_plane_sharpness(image, 2, mask, 1.0) == pytest.approx((1 / 2.0) ** 2 / 7)
    assert coarse_axis(image) == 2 and coarse_axis(make_image(array, spacing=(3.0, 1.0, 2.0))) == 0


def test_enhance_reports_the_self_check_of_a_learned_method_only(oblique_thick):
    from mrisr.pipeline import EnhanceOptions, enhance

    events = []
    learned = enhance(oblique_thick, EnhanceOptions(method="ressrdiff", steps=1, target_spacing=(0.9, 0.9, 1.25)),
                      progress=events.append)
    check = learned.self_check
    assert check is not None and check.coarse_axis == 2 and check.bspline_consistency_db > 20
    assert [e.message for e in events if e.stage == "self-check" and e.done == 1] == [check.message]
    assert enhance(oblique_thick, EnhanceOptions(method="bspline")).self_check is None


def test_plan_warns_outside_the_training_range_and_not_inside(tmp_path, oblique_thick):
    from mrisr.io.volumes import write_volume
    from mrisr.plan import EnhanceOptions, plan_run

    path = write_volume(oblique_thick, tmp_path / "in.nrrd")  # 0.9 × 0.9 × 5 mm
    inside = plan_run(path, EnhanceOptions(method="ressrdiff", target_spacing=(0.9, 0.9, 1.0)))
    assert inside.errors == [] and inside.warnings == []
    coarse = plan_run(path, EnhanceOptions(method="ressrdiff", target_spacing=(2.5, 2.5, 2.5)))
    assert len(coarse.warnings) == 1 and "trained for 0.7–2 mm" in coarse.warnings[0]  # ×2.0 is in range
    assert coarse.to_json()["warnings"] == coarse.warnings
    fine = plan_run(path, EnhanceOptions(method="ressrdiff", target_spacing=(0.9, 0.9, 0.4)))
    assert len(fine.warnings) == 2 and "×12.5" in fine.warnings[1]  # finer than 0.7 mm, and beyond ×11
    assert plan_run(path, EnhanceOptions(method="bspline", target_spacing=(2.5, 2.5, 2.5))).warnings == []
