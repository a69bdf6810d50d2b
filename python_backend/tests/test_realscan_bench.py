"""The real-scan generalisation bench on nibabel's anatomical.nii (real data, never used in training)."""

import argparse

import pytest

from mrisr.evaluation.benchmarks import realscan


def test_a_method_without_weights_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MRISR_MODELS", str(tmp_path))
    monkeypatch.setattr("mrisr.io.model_store.shipped_folder", lambda: tmp_path / "no_shipped_weights")
    args = argparse.Namespace(methods=["nearest", "ressrdiff", "bspline"], thickness=[8.0])
    rows = realscan.run(args, lambda event: None)
    case = rows["8 mm slices"]
    assert "no trained weights" in case["ressrdiff"]["error"]
    assert case["bspline"]["psnr"] > case["nearest"]["psnr"] + 0.2 and case["bspline"]["gmsd"] < case["nearest"]["gmsd"]
    # no contrast change here: the truth re-acquired explains the LR up to its noise (SNR 30)
    assert case["(ground truth)"]["consistency_head"] > 30
    assert case["bspline"]["consistency_head"] < case["(ground truth)"]["consistency_head"]
    assert rows["voxels_scored"] > 5000
