"""Several posterior samples: mean as the estimate, per-voxel standard deviation as uncertainty."""

import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.simulation.degradation import DegradationConfig, degrade
from mrisr.errors import InputError
from mrisr.pipeline import EnhanceOptions, enhance
from mrisr.inference.posterior_samples import MAX_SAMPLES, check_samples, labelled, sample_statistics
from mrisr.progress import ProgressEvent
from mrisr.simulation.template import mni_image


def test_running_statistics_equal_numpy_over_the_seeds():
    def run(seed, progress):
        progress(ProgressEvent("sample", 1, 1, "step"))
        return np.random.default_rng(seed).normal(seed, 1 + seed, (4, 5, 6)).astype(np.float32)

    events = []
    stats = sample_statistics(run, 7, 5, events.append)
    stacked = np.stack([run(7 + i, lambda e: None) for i in range(5)]).astype(np.float64)
    np.testing.assert_allclose(stats.mean, stacked.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.std, stacked.std(0), rtol=1e-5, atol=1e-5)
    assert stats.mean.dtype == np.float32 and stats.samples == 5
    assert [e.message for e in events] == [f"sample {i}/5: step" for i in range(1, 6)]
    single = sample_statistics(run, 3, 1, events.append)
    np.testing.assert_array_equal(single.mean, run(3, lambda e: None))
    assert not single.std.any()


def test_sample_count_checks():
    check_samples(1, False, "bspline")
    check_samples(MAX_SAMPLES, True, "ressrdiff")
    with pytest.raises(InputError, match="deterministic"):
        check_samples(2, False, "bspline")
    for bad in (0, MAX_SAMPLES + 1, 2.5, True):
        with pytest.raises(InputError, match="out of range"):
            check_samples(bad, True, "ressrdiff")


def test_progress_of_several_samples_counts_over_the_whole_run():
    events = []
    labelled(events.append, 0, 1)(ProgressEvent("sample", 0, 1, ""))
    assert events[0] == ProgressEvent("sample", 0, 1, "")
    labelled(events.append, 2, 4)(ProgressEvent("slices", 3, 10, "3/10 slice batches"))
    assert events[1] == ProgressEvent("slices", 23, 40, "sample 3/4: 3/10 slice batches")
    labelled(events.append, 0, 4)(ProgressEvent("resample", 1, 1, ""))
    assert events[2] == ProgressEvent("resample", 1, 4, "sample 1/4")


@pytest.fixture(scope="module")
def mni_case():
    hr = mni_image("t1")[60:108, 70:134, 40:80]  # 48×64×40 voxels of the template, 1 mm
    lr = degrade(hr, DegradationConfig(slice_thickness=4.0, snr=20.0, noise="rician", seed=3))
    return hr, lr


def test_mean_and_uncertainty_of_ressrdiff_samples(mni_case):
    hr, lr = mni_case
    options = dict(method="ressrdiff", steps=1, target_spacing=hr.GetSpacing(), device="cpu", seed=4)
    singles = [sitk.GetArrayFromImage(enhance(lr, EnhanceOptions(**options | {"seed": 4 + i})).image) for i in range(3)]
    result = enhance(lr, EnhanceOptions(**options, samples=3))
    mean, std = sitk.GetArrayFromImage(result.image), sitk.GetArrayFromImage(result.uncertainty)
    scale = float(np.ptp(singles[0]))
    np.testing.assert_allclose(mean, np.mean(singles, 0), atol=1e-4 * scale)
    np.testing.assert_allclose(std, np.std(singles, 0), atol=1e-3 * scale)
    assert result.uncertainty.GetSpacing() == result.image.GetSpacing() == hr.GetSpacing()
    assert result.settings["samples"] == 3 and std.max() > 1e-3 * scale  # the samples differ
    truth = sitk.GetArrayFromImage(hr)
    errors = [np.mean((s - truth) ** 2) for s in singles]
    assert np.mean((mean - truth) ** 2) < np.mean(errors)  # averaging removes part of each sample's error
    assert enhance(lr, EnhanceOptions(**options)).uncertainty is None


def test_interpolation_refuses_several_samples(mni_case):
    with pytest.raises(InputError, match="deterministic"):
        enhance(mni_case[1], EnhanceOptions(method="bspline", samples=2))
