import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.errors import InputError
from mrisr.simulation.synthetic import (
    TRAIN_THICKNESS_MM,
    VALIDATION_THICKNESS_MM,
    make_pair,
    random_degradation,
    synthesize_contrast,
    template_maps,
)


def tissue_means(volume, maps):
    return {k: float(volume[maps[k] > 0.9].mean()) for k in ("csf", "gm", "wm")}


@pytest.mark.parametrize("kind, order", [("t1", ("csf", "gm", "wm")), ("t2", ("wm", "gm", "csf")), ("pd", ("wm", "gm", "csf"))])
def test_contrast_families_order_tissues_like_real_scans(kind, order):
    maps = template_maps()
    volume = synthesize_contrast(maps, kind, np.random.default_rng(0))
    means = tissue_means(volume, maps)
    assert means[order[0]] < means[order[1]] < means[order[2]], means


def test_csf_map_is_a_probability_inside_the_brain():
    maps = template_maps()
    assert 0 <= maps["csf"].min() and maps["csf"].max() <= 1
    mostly_csf = int((maps["csf"] > 0.5).sum())
    assert 50_000 < mostly_csf < 400_000  # 50–400 mL at 1 mm: ventricles and sulci, not the whole head


def test_validation_degradations_are_disjoint_from_training():
    rng = np.random.default_rng(0)
    train = {random_degradation(rng).slice_thickness for _ in range(200)}
    val = {random_degradation(rng, validation=True).slice_thickness for _ in range(50)}
    assert train == set(TRAIN_THICKNESS_MM) and val == set(VALIDATION_THICKNESS_MM) and not train & val


def test_unknown_contrast_and_bad_seed():
    with pytest.raises(InputError, match="contrast"):
        synthesize_contrast(template_maps(), "flair", np.random.default_rng(0))
    with pytest.raises(InputError, match="seed"):
        make_pair(-1)


@pytest.mark.slow
def test_pairs_are_deterministic_and_splits_differ():
    a, b = make_pair(3), make_pair(3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a.hr), sitk.GetArrayFromImage(b.hr))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a.lr), sitk.GetArrayFromImage(b.lr))
    v = make_pair(3, validation=True)
    assert not np.allclose(sitk.GetArrayFromImage(a.hr), sitk.GetArrayFromImage(v.hr))
    assert a.condition.GetSize() == a.hr.GetSize() and a.reference.GetSize() == a.hr.GetSize()
    assert a.lr.GetSpacing()[a.degradation.axis] == pytest.approx(a.degradation.slice_thickness + a.degradation.slice_gap)
