"""Regression checks of the trained weights that ship in the package (not evidence of generalisation:
the crop comes from the MNI152 template the synthetic training volumes are derived from)."""

import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.simulation.degradation import DegradationConfig, degrade
from mrisr.imaging.foreground import foreground_mask
from mrisr.evaluation.metrics import psnr, ssim
from mrisr.pipeline import EnhanceOptions, enhance
from mrisr.simulation.template import mni_image


@pytest.mark.slow
def test_ressrdiff_cpu_weights_beat_bspline_on_a_thick_slice_crop():
    """Scored after a linear intensity fit: the simulated low-field contrast compression has no fixed inverse
    for weights trained on random per-label contrasts (raw PSNR here: 25.7 dB vs B-spline 24.5; the previous,
    MNI-only weights 26.1, the label-only stage 24.1; see the card's evaluation), so raw PSNR tests the contrast
    mapping more than the resolution."""
    from mrisr.evaluation.benchmarks.inplane import linear_fit_psnr

    hr = mni_image("t1")[60:140, 70:170, 40:120]
    lr = degrade(hr, DegradationConfig(slice_thickness=5.0, contrast_compression=0.2, snr=25.0, noise="rician", seed=3))
    reference = sitk.GetArrayFromImage(hr)
    mask = foreground_mask(reference)
    scores = {}
    for method, steps in (("bspline", None), ("ressrdiff", 1)):
        options = EnhanceOptions(method=method, steps=steps, target_spacing=(1, 1, 1))
        out = sitk.GetArrayFromImage(enhance(lr, options).image)
        assert out.shape == reference.shape and np.isfinite(out).all()
        scores[method] = (linear_fit_psnr(out, reference, mask), ssim(out, reference, mask=mask))
    assert scores["ressrdiff"][0] > scores["bspline"][0] + 0.5, scores
    assert scores["ressrdiff"][1] > scores["bspline"][1] + 0.05, scores


@pytest.fixture(scope="module")
def heldout_crop():
    """An 80³ central cube of held-out validation volume 0, ×4 thick low-field slices (the bench case)."""
    from mrisr.evaluation.benchmarks.quality import CASES, central_crop
    from mrisr.simulation.synthetic import make_pair

    return central_crop(make_pair(0, validation=True, degradation=CASES["x4_lowfield"]), 80)


def _psnr_of(pair, method: str) -> float:
    reference = sitk.GetArrayFromImage(pair.hr)
    options = EnhanceOptions(method=method, target_spacing=pair.hr.GetSpacing())
    needs_reference = method == "diffmsr"
    out = sitk.GetArrayFromImage(enhance(pair.lr, options, pair.reference if needs_reference else None).image)
    assert out.shape == reference.shape and np.isfinite(out).all()
    return psnr(out, reference, mask=foreground_mask(reference))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["diffusioniqt", "diffmsr"])
def test_shipped_weights_beat_bspline_on_a_heldout_crop(heldout_crop, method):
    bspline, enhanced = _psnr_of(heldout_crop, "bspline"), _psnr_of(heldout_crop, method)
    assert enhanced > bspline + 0.5, (method, enhanced, bspline)
