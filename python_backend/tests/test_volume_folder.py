"""Training on a folder of the user's own volumes (`mrisr train --data DIR`): real files, real pool cache."""

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.errors import InputError
from mrisr.simulation.template import mni_image
from mrisr.training.pool import PairPool
from mrisr.training.volume_folder import ENVIRONMENT, VolumeFolder


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    """Two training subjects (one with a reference contrast) and one validation subject: MNI crops."""
    root = tmp_path_factory.mktemp("userdata")
    t1 = mni_image("t1")
    crops = {"train/a": t1[50:98, 60:108, 40:88], "train/b": t1[90:138, 100:148, 60:108],
             "validation/c": t1[70:118, 80:128, 50:98]}
    for name, image in crops.items():
        (root / name).mkdir(parents=True)
        sitk.WriteImage(image, str(root / name / "target.nii.gz"))
    inverted = sitk.GetArrayFromImage(crops["train/b"])
    reference = sitk.GetImageFromArray(inverted.max() - inverted)
    reference.CopyInformation(crops["train/b"])
    sitk.WriteImage(reference, str(root / "train" / "b" / "reference.nii.gz"))
    return root


def test_pool_turns_each_subject_into_a_degraded_pair_cached_per_folder(data_folder, monkeypatch, tmp_path):
    monkeypatch.setenv(ENVIRONMENT, str(data_folder))
    monkeypatch.setenv("MRISR_CACHE", str(tmp_path))
    pool = PairPool(16)
    assert pool.count == 2 and PairPool(4, validation=True).count == 1
    pair = pool.get(1)
    assert pair.hr.shape == pair.condition.shape == pair.reference.shape == (48, 48, 48)
    assert np.abs(pair.hr - pair.condition).mean() > 0.01  # degraded, not a copy
    assert np.corrcoef(pair.hr.ravel(), pair.reference.ravel())[0, 1] < -0.5  # the inverted reference
    cached = list((tmp_path / VolumeFolder(data_folder).cache_name).glob("train_*.npz"))
    assert len(cached) == 1
    again = PairPool(16).get(1)  # from the cache (fp16), the same pair
    np.testing.assert_allclose(again.condition, pair.condition, atol=2e-3)


def test_reference_off_the_target_grid_is_refused(data_folder, tmp_path):
    root = tmp_path / "bad"
    (root / "train" / "s").mkdir(parents=True)
    target = mni_image("t1")[50:98, 60:108, 40:88]
    sitk.WriteImage(target, str(root / "train" / "s" / "target.nii.gz"))
    sitk.WriteImage(target[:40], str(root / "train" / "s" / "reference.nii.gz"))
    with pytest.raises(InputError, match="not on the grid of its target"):
        VolumeFolder(root).pair(0)


def _train(*args):
    return subprocess.run([sys.executable, "-m", "mrisr.cli", "--progress", "none", "train", *args],
                          capture_output=True, encoding="utf-8", timeout=120)


def test_cli_refuses_a_folder_without_subjects_and_tissueseg_with_data(tmp_path, data_folder):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    r = _train("--method", "ressrdiff", "--steps", "1", "--out", str(tmp_path / "o"), "--data", str(tmp_path / "empty"))
    assert r.returncode != 0 and "holds no subject folder" in r.stderr and "Traceback" not in r.stderr
    r = _train("--method", "ressrdiff", "--steps", "1", "--out", str(tmp_path / "o"), "--data", str(tmp_path))
    assert r.returncode != 0 and "has no train/ folder" in r.stderr
    r = _train("--method", "tissueseg", "--steps", "1", "--out", str(tmp_path / "o"), "--data", str(data_folder))
    assert r.returncode != 0 and "--data is for the enhancement methods" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_built_in_pairs_mixed_into_a_folder_pool_follow_its_subjects(data_folder, monkeypatch, tmp_path):
    """`--mix-synthetic N`: training indices past the folder's subjects are built-in MNI152 pairs 0..N-1;
    validation stays the folder's own."""
    from mrisr.training.volume_folder import MIX_ENVIRONMENT

    monkeypatch.setenv(ENVIRONMENT, str(data_folder))
    monkeypatch.setenv(MIX_ENVIRONMENT, "3")
    monkeypatch.setenv("MRISR_CACHE", str(tmp_path))
    pool = PairPool(16)
    assert (pool.subjects, pool.mixed, pool.count) == (2, 3, 5)
    assert PairPool(4, validation=True).count == 1
    assert pool.get(0).hr.shape == (48, 48, 48)
    built_in = pool.get(2)  # make_pair(0): the padded 200 × 240 × 200 template grid
    assert built_in.hr.shape == (200, 240, 200) and built_in.mask.mean() > 0.1


def test_mix_without_a_data_folder_is_refused(tmp_path):
    answer = subprocess.run([sys.executable, "-m", "mrisr.cli", "train", "--method", "ressrdiff", "--steps", "1",
                             "--out", str(tmp_path), "--mix-synthetic", "4"], capture_output=True, text=True, timeout=120)
    assert answer.returncode != 0 and "--mix-synthetic adds built-in pairs to a --data folder" in answer.stderr
