"""Label-driven synthetic subjects: the head shell, contrast families, geometry, determinism, and the
training-folder layout that `mrisr train --data` reads. The anatomy is the MNI152 template's tissue labels
(halved, so each test runs in seconds); the five SynthSR subjects are used by training, not by CI."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from mrisr.errors import InputError
from mrisr.simulation import label_synthesis as ls
from mrisr.training.volume_folder import VolumeFolder


@pytest.fixture(scope="module")
def small_labels():
    """MNI152 tissue labels in FreeSurfer numbers, every second voxel (a small head, read as 1 mm)."""
    return ls.mni_label_map()[::2, ::2, ::2].copy()


def test_label_classes():
    assert [ls.class_of(n) for n in (2, 41, 3, 42, 4, 24, 12, 31)] == ["wm", "wm", "gm", "gm", "csf", "csf", "deep",
                                                                       "plexus"]
    assert ls.class_of(ls.SHELL_LABELS["skull"]) == "skull" and ls.class_of(999) == "gm"


def test_head_shell_wraps_the_brain_in_order_and_fills_sulci(small_labels):
    shelled = ls.add_head_shell(small_labels, np.random.default_rng(0), pad=20)
    assert shelled.shape == tuple(n + 40 for n in small_labels.shape)
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(np.pad(small_labels, 20) > 0, iterations=3))
    assert not np.any(brain & (shelled == 0))  # nothing unlabelled left inside the head
    distance = ndimage.distance_transform_edt(~brain)
    medians = {name: np.median(distance[(shelled == number) & ~brain]) for name, number in ls.SHELL_LABELS.items()}
    assert 0 < medians["outer_csf"] < medians["skull"] < medians["scalp"] <= 17
    assert np.all(np.isin(shelled[brain], list(np.unique(small_labels)) + [ls.SHELL_LABELS["outer_csf"]]))


@pytest.mark.parametrize("family, order", [("t1", ("wm", "gm", "csf")), ("t2", ("csf", "gm", "wm")),
                                           ("flair", ("gm", "wm", "csf")), ("pd", ("csf", "gm", "wm"))])
def test_contrast_families_order_the_tissues(small_labels, family, order):
    rng = np.random.default_rng(3)
    volume = ls.draw_intensities(small_labels, family, rng)
    means = {name: volume[small_labels == number].mean() for name, number in (("wm", 2), ("gm", 3), ("csf", 24))}
    assert means[order[0]] > means[order[1]] > means[order[2]]
    assert volume[small_labels == 0].max() == 0.0


def test_unknown_family_is_refused(small_labels):
    with pytest.raises(InputError, match="contrast family"):
        ls.draw_intensities(small_labels, "ct", np.random.default_rng(0))


def test_subjects_are_deterministic_with_their_own_voxel_size(small_labels):
    first, recipe = ls.synthesize_subject(small_labels, seed=5, spacing_mm=1.6)
    again, _ = ls.synthesize_subject(small_labels, seed=5, spacing_mm=1.6)
    other, other_recipe = ls.synthesize_subject(small_labels, seed=6)
    assert first.GetSpacing() == pytest.approx((1.6,) * 3) and recipe.spacing_mm == 1.6
    expected = [int(round((n + 40) / 1.6)) for n in small_labels.shape[::-1]]  # the shell's padding included
    assert list(first.GetSize()) == expected
    np.testing.assert_array_equal(sitk.GetArrayFromImage(first), sitk.GetArrayFromImage(again))
    assert ls.HR_SPACING_MM[0] <= other_recipe.spacing_mm <= ls.HR_SPACING_MM[1]
    values = sitk.GetArrayFromImage(first)
    assert 0.0 <= values.min() and 0.5 < values.max() <= 1.0 + 1e-6
    assert (values > 0.05).mean() > 0.1  # a head, not an empty box


def test_training_folder_holds_out_validation_anatomy(tmp_path, small_labels):
    labels = tmp_path / "labels"
    labels.mkdir()
    for name in ("a", "b"):
        image = sitk.GetImageFromArray(small_labels.astype(np.int16))
        sitk.WriteImage(image, str(labels / f"{name}_labels.nii.gz"))
    out = tmp_path / "subjects"
    recipes = ls.write_subject_folder(labels, out, count=2, validation_maps=1)
    sources = {split: sorted(p.name.rsplit("_", 1)[0] for p in (out / split).iterdir()) for split in ("train", "validation")}
    assert sources == {"train": ["a_labels", "a_labels"], "validation": ["b_labels", "b_labels"]}
    assert len(VolumeFolder(out).subjects) == 2 and len(VolumeFolder(out, validation=True).subjects) == 2
    assert [r["source"] for r in json.loads((out / "subjects.json").read_text())] == [r.source for r in recipes]
    with pytest.raises(InputError, match="need more than"):
        ls.write_subject_folder(labels, tmp_path / "none", count=1, validation_maps=2)
    with pytest.raises(InputError, match="validation-maps 0 is invalid"):
        ls.write_subject_folder(labels, tmp_path / "none", count=1, validation_maps=0)
