import argparse

import pytest

from mrisr.evaluation.benchmarks import sr3pdm
from mrisr.errors import InputError


def test_bench_arguments_and_validation():
    parser = argparse.ArgumentParser()
    sr3pdm.add_arguments(parser)
    args = parser.parse_args(["--crop", "40", "--volume-runs", "pdm_k25_ddim5", "--slice-runs", ""])
    assert sr3pdm._runs(args.volume_runs) == ["pdm_k25_ddim5"] and sr3pdm._runs(args.slice_runs) == []
    assert sr3pdm.VOLUME_RUNS["sr3_full"] == (100, 100) and sr3pdm.VOLUME_RUNS["pdm_k25"] == (25, 25)
    with pytest.raises(InputError, match="unknown runs"):
        sr3pdm._runs("pdm_k10")
    with pytest.raises(InputError, match="crop 45"):
        sr3pdm._mni_thick5(45)
    assert sr3pdm._peak_rss_mib() > 10


def test_cropped_thick5_input_has_5_mm_slices():
    lr = sr3pdm._mni_thick5(40)
    assert lr.GetSize() == (40, 40, 8) and lr.GetSpacing() == pytest.approx((1.0, 1.0, 5.0))
