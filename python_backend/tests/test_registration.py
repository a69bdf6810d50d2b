import math
from functools import lru_cache

import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.errors import InputError
from mrisr.imaging.geometry import Grid, grid_with_spacing, resample
from mrisr.methods import MethodInput, RunSettings
from mrisr.methods.diffmsr import DiffMSRMethod
from mrisr.imaging.registration import RegistrationConfig, register_rigid, resample_through
from mrisr.registry import get_spec
from mrisr.simulation.template import mni_image


@lru_cache(maxsize=1)
def contrasts() -> tuple[sitk.Image, sitk.Image]:
    """(T2-like target, T1 reference) of the MNI template at 3 mm: different contrasts, same anatomy."""
    t1 = mni_image("t1")
    grid = grid_with_spacing(Grid.of(t1), (3.0, 3.0, 3.0))
    t1a, gm, wm = (sitk.GetArrayFromImage(resample(mni_image(k), grid, "linear")) for k in ("t1", "gm", "wm"))
    t1a = t1a / t1a.max()
    brain = np.clip(gm + wm, 0, 1)
    csf = np.clip((t1a > 0.02) - brain, 0, 1) * (t1a < 0.35)
    t2 = 0.35 * wm + 0.6 * gm + 0.95 * csf + 0.25 * t1a * (1 - brain) * (1 - csf)
    return grid.image_from_array(t2.astype(np.float32)), grid.image_from_array(t1a.astype(np.float32))


def known_motion(fixed: sitk.Image) -> sitk.Euler3DTransform:
    motion = sitk.Euler3DTransform()
    motion.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()]))
    motion.SetRotation(math.radians(4.0), math.radians(-3.0), math.radians(5.0))
    motion.SetTranslation((4.0, -3.0, 5.0))
    return motion


def test_recovers_a_known_rigid_motion_between_contrasts():
    target, t1 = contrasts()
    motion = known_motion(target)
    moved = sitk.Resample(t1, target, motion.GetInverse(), sitk.sitkLinear, 0.0)  # moved(y) = t1(motion⁻¹ y)
    result = register_rigid(target, moved)
    points = [target.TransformContinuousIndexToPhysicalPoint(p) for p in [(15, 20, 15), (50, 60, 45), (33, 39, 31)]]
    errors = [np.linalg.norm(np.subtract(result.transform.TransformPoint(p), motion.TransformPoint(p))) for p in points]
    assert max(errors) < 1.0  # mm, on a 3 mm grid
    assert result.moved and result.metric_after < result.metric_before
    assert "applied" in result.report and "\n" not in result.report
    aligned = resample_through(moved, result.transform, Grid.of(target), sitk.sitkLinear)
    inner = (slice(5, -5),) * 3
    truth = sitk.GetArrayFromImage(t1)[inner]
    before = np.abs(sitk.GetArrayFromImage(moved)[inner] - truth).mean()
    assert np.abs(aligned[inner] - truth).mean() < 0.5 * before


def test_an_aligned_pair_is_left_alone():
    target, t1 = contrasts()
    result = register_rigid(target, t1)
    assert max(abs(a) for a in result.rotation_deg) < 0.5
    assert max(abs(t) for t in result.translation_mm) < 0.75
    assert "already aligned" in result.report or result.moved


def test_config_errors_name_the_value():
    with pytest.raises(InputError, match="sampling_fraction"):
        RegistrationConfig(sampling_fraction=0.0)
    with pytest.raises(InputError, match="one sigma per shrink level"):
        RegistrationConfig(shrink_factors=(4, 2), smoothing_sigmas_mm=(1.0,))


def test_the_method_aligns_a_misaligned_reference_and_reports_it():
    target, t1 = contrasts()
    moved = sitk.Resample(t1, target, known_motion(target).GetInverse(), sitk.sitkLinear, 0.0)
    grid = Grid.of(target)
    run = RunSettings(steps=None, start_step=None, patch_size=None, overlap=0.25, device="cpu", seed=0, batch_size=None)
    inputs = MethodInput(lr=target, grid=grid, mask=np.ones(grid.shape, bool), reference=moved, settings=run)
    events = []
    aligned = DiffMSRMethod(get_spec("diffmsr"))._reference(inputs, target, events.append)
    inner = (slice(5, -5),) * 3
    truth = sitk.GetArrayFromImage(t1)[inner]
    assert np.abs(aligned[inner] - truth).mean() < 0.5 * np.abs(sitk.GetArrayFromImage(moved)[inner] - truth).mean()
    assert events[-1].stage == "register" and "registration applied" in events[-1].message
