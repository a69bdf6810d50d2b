import argparse

import pytest

from mrisr.evaluation.benchmarks import sr3pdm
from mrisr.errors import InputError
from mrisr.registry import get_spec


def test_bench_arguments_and_validation():
    parser = argparse.ArgumentParser()
    sr3pdm.add_arguments(parser)
    args = parser.parse_args(["--crop", "40", "--volume-runs", "pdm_k25_ddim5", "--slice-runs", ""])
    assert sr3pdm._runs(args.volume_runs) == ["pdm_k25_ddim5"] and sr3pdm._runs(args.slice_runs) == []
    with pytest.raises(InputError, match="unknown runs"):
        sr3pdm._runs("pdm_k10")
    with pytest.raises(InputError, match="crop 45"):
        sr3pdm._mni_thick5(45)


def test_every_volume_run_is_a_valid_partial_chain_of_the_sr3pdm_schedule():
    """Each run (start step K, steps) must be one the method accepts: 1 ≤ steps ≤ K ≤ T of its registry."""
    spec = get_spec("sr3pdm")
    for name, (start, steps) in sr3pdm.VOLUME_RUNS.items():
        assert 1 <= steps <= start <= spec.config["T_train"], name


def test_cropped_thick5_input_has_5_mm_slices():
    lr = sr3pdm._mni_thick5(40)
    assert lr.GetSize() == (40, 40, 8) and lr.GetSpacing() == pytest.approx((1.0, 1.0, 5.0))
