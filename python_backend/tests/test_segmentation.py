"""Tissue segmentation: labels, label-map files, agreement figures, the GMM fallback and the shipped U-Net."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.segmentation.agreement import agreement_table, label_volumes_ml
from mrisr.errors import InputError
from mrisr.evaluation.metrics import dice
from mrisr.io.segmentations import read_labels, write_labels
from mrisr.simulation.synthetic import template_maps
from mrisr.segmentation.gmm import fit_gmm, gmm_labels
from mrisr.segmentation.tissues import TISSUES, labels_from_probabilities, template_labels


def test_template_labels_match_the_probability_maps_volumes():
    labels, maps = template_labels(), template_maps()
    for tissue, key in zip(TISSUES[1:], ("gm", "wm")):  # CSF is mostly partial volume: its hard label is smaller
        hard, soft = float((labels == tissue.value).sum()), float(maps[key].sum())
        assert abs(hard - soft) / soft < 0.2, (tissue.name, hard, soft)
    assert 0.3 < (labels == 1).sum() / maps["csf"].sum() < 1.0
    assert 1.0e6 < (labels > 0).sum() < 2.2e6  # ~1.4–1.9 L brain at 1 mm


def test_labels_from_probabilities_take_the_most_probable_class():
    csf, gm, wm = (np.array([[0.1, 0.6, 0.0, 0.3]]), np.array([[0.2, 0.3, 0.1, 0.4]]), np.array([[0.1, 0.0, 0.0, 0.3]]))
    assert labels_from_probabilities(csf, gm, wm).tolist() == [[0, 1, 0, 2]]


def test_seg_nrrd_round_trip_keeps_labels_geometry_and_segment_names(tmp_path):
    array = np.zeros((6, 7, 8), np.uint8)
    array[1:4, 2:5, 3:6], array[0, 0, 0], array[5, 6, 7] = 2, 3, 1
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.9, 1.1, 3.0))
    image.SetOrigin((5.0, -7.0, 2.0))
    path = write_labels(image, tmp_path / "tissues.seg.nrrd")
    back = read_labels(path)
    assert np.array_equal(sitk.GetArrayFromImage(back), array)
    assert back.GetSpacing() == pytest.approx(image.GetSpacing()) and back.GetOrigin() == pytest.approx(image.GetOrigin())
    header = sitk.ReadImage(str(path))
    names = [header.GetMetaData(f"Segment{i}_Name") for i in range(3)]
    assert names == [t.name for t in TISSUES]
    assert header.GetMetaData("Segment2_LabelValue") == "3"
    assert "SCT^389080008^White matter" in header.GetMetaData("Segment2_Tags")


def test_read_labels_refuses_a_map_with_other_values(tmp_path):
    array = np.zeros((4, 4, 4), np.uint8)
    array[0, 0, 0] = 7
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "other.nii.gz"))
    with pytest.raises(InputError, match="values \\[7\\]"):
        read_labels(tmp_path / "other.nii.gz")


def test_agreement_table_by_hand():
    first = np.zeros((2, 2, 5), np.uint8)
    second = np.zeros((2, 2, 5), np.uint8)
    first[0, 0, :4] = 2   # 4 GM voxels
    second[0, 0, 2:] = 2  # 3 GM voxels, 2 shared
    first[1, 1, :] = 3
    second[1, 1, :] = 3   # identical WM
    rows = {r["label"]: r for r in agreement_table(first, second, (2.0, 1.0, 1.0))}  # 2 µL voxels
    assert rows["Grey matter"]["dice"] == pytest.approx(2 * 2 / 7, abs=1e-4)
    assert rows["Grey matter"]["input_ml"] == pytest.approx(0.01) and rows["Grey matter"]["output_ml"] == pytest.approx(0.01)
    assert rows["White matter"]["dice"] == 1.0 and rows["Cerebrospinal fluid"]["dice"] == 1.0  # absent from both
    assert label_volumes_ml(first, (2.0, 1.0, 1.0))["White matter"] == pytest.approx(0.01)
    with pytest.raises(InputError, match="different sizes"):
        agreement_table(first, second[:, :, :4], (1, 1, 1))


def test_gmm_recovers_a_known_mixture():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.2, 0.03, 3000), rng.normal(0.55, 0.05, 5000), rng.normal(0.8, 0.04, 4000)])
    weights, means, stds = fit_gmm(values)
    assert means == pytest.approx([0.2, 0.55, 0.8], abs=0.02)
    assert stds == pytest.approx([0.03, 0.05, 0.04], abs=0.01)
    assert weights == pytest.approx([0.25, 5 / 12, 1 / 3], abs=0.03)


def test_gmm_fallback_segments_the_skull_stripped_template():
    t1 = template_maps()["t1"]
    scores = dice(gmm_labels(t1), template_labels(), [1, 2, 3])
    assert scores[2] > 0.7 and scores[3] > 0.75, scores


@pytest.fixture(scope="module")
def template_segmentations():
    """U-Net labels of the HR template and of its ×5 thick-slice acquisition interpolated back (B-spline)."""
    from mrisr.simulation.degradation import DegradationConfig, degrade
    from mrisr.imaging.geometry import Grid, resample
    from mrisr.simulation.template import mni_image
    from mrisr.segmentation.segmenter import segment_image

    hr = mni_image("t1", pad_to_multiple=40)
    interpolated = resample(degrade(hr, DegradationConfig(slice_thickness=5.0)), Grid.of(hr), "bspline")
    return {name: sitk.GetArrayFromImage(segment_image(image)) for name, image in (("hr", hr), ("x5", interpolated))}


@pytest.mark.slow
def test_unet_segments_the_hr_template_like_its_tissue_maps(template_segmentations):
    scores = dice(template_segmentations["hr"], template_labels(), [1, 2, 3])
    assert scores[2] >= 0.85 and scores[3] >= 0.85, scores


@pytest.mark.slow
def test_thick_slice_input_segments_measurably_worse_than_the_hr_image(template_segmentations):
    reference = template_labels()
    hr, x5 = (dice(template_segmentations[k], reference, [1, 2, 3]) for k in ("hr", "x5"))
    assert x5[2] < hr[2] - 0.02 and x5[3] < hr[3] - 0.01, (hr, x5)
