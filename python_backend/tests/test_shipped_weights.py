"""Regression checks of the trained weights that ship in the package (not evidence of generalisation:
the crop comes from the MNI152 template the synthetic training volumes are derived from)."""

import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.degradation import DegradationConfig, degrade
from mrisr.foreground import foreground_mask
from mrisr.metrics import psnr, ssim
from mrisr.pipeline import EnhanceOptions, enhance
from mrisr.sample import mni_image


@pytest.mark.slow
def test_ressrdiff_cpu_weights_beat_bspline_on_a_thick_slice_crop():
    hr = mni_image("t1")[60:140, 70:170, 40:120]
    lr = degrade(hr, DegradationConfig(slice_thickness=5.0, contrast_compression=0.2, snr=25.0, noise="rician", seed=3))
    reference = sitk.GetArrayFromImage(hr)
    mask = foreground_mask(reference)
    scores = {}
    for method in ("bspline", "ressrdiff"):
        out = sitk.GetArrayFromImage(enhance(lr, EnhanceOptions(method=method, target_spacing=(1, 1, 1))).image)
        assert out.shape == reference.shape and np.isfinite(out).all()
        scores[method] = (psnr(out, reference, mask=mask), ssim(out, reference, mask=mask))
    assert scores["ressrdiff"][0] > scores["bspline"][0] + 0.5, scores
    assert scores["ressrdiff"][1] > scores["bspline"][1], scores
