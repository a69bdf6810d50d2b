"""`mrisr plan` answers what `enhance` would do: the same grid, the same first error, the same files.

Real subprocesses of the CLI on small files; the limits follow the backend's own constants.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mrisr import plan as planning
from mrisr.errors import InputError
from mrisr.imaging import backprojection
from mrisr.inference import posterior_samples
from mrisr.registry import get_spec


def mrisr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mrisr.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def thick_file(tmp_path, oblique_thick) -> Path:
    path = tmp_path / "in.nii.gz"
    sitk.WriteImage(oblique_thick, str(path))
    return path


def test_plan_predicts_the_grid_and_the_files_of_a_real_run(tmp_path, thick_file):
    out, interpolated = tmp_path / "up.nii.gz", tmp_path / "up_interpolated.nii"
    args = [thick_file, out, "--method", "linear", "--target-spacing", "1.3", "0.9", "2.1", "--segment",
            "--segmenter", "gmm", "--write-interpolated", interpolated]
    answer = mrisr("plan", *args, "--json")
    assert answer.returncode == 0, answer.stderr
    plan = json.loads(answer.stdout)
    assert plan["errors"] == [] and plan["method"] == "linear"
    before = set(tmp_path.iterdir())
    run = mrisr("enhance", *args)
    assert run.returncode == 0, run.stderr
    assert {Path(p) for p in plan["files"].values()} == set(tmp_path.iterdir()) - before
    enhanced = sitk.ReadImage(str(out))
    assert tuple(plan["output"]["size"]) == enhanced.GetSize()
    np.testing.assert_allclose(plan["output"]["spacing"], enhanced.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(plan["output"]["origin"], enhanced.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(plan["output"]["direction"], enhanced.GetDirection(), atol=1e-6)
    assert plan["output"]["voxels"] == int(np.prod(enhanced.GetSize()))
    assert plan["output"]["memory_mib"] == pytest.approx(4 * plan["output"]["voxels"] / 2**20, abs=0.05)


@pytest.mark.parametrize("args", [
    ["--method", "bspline", "--steps", "3"],
    ["--method", "bspline", "--back-projection", "11"],
    ["--method", "ressrdiff", "--samples", "99"],
    ["--overlap", "1.5", "--method", "magic"],
    ["--target-spacing", "0.01", "0.01", "0.01", "--max-voxels", "1000"],
    ["--method", "diffmsr"],
])
def test_plan_refuses_with_the_message_enhance_prints(tmp_path, thick_file, args):
    out = tmp_path / "out.nii.gz"
    planned, ran = mrisr("plan", thick_file, out, *args, "--json"), mrisr("enhance", thick_file, out, *args)
    assert planned.returncode == ran.returncode == 2
    errors = json.loads(planned.stdout)["errors"]
    assert ran.stderr.strip() == f"mrisr: error: {errors[0]}"
    assert not out.exists()


def test_plan_collects_every_independent_error_and_still_answers_the_grid(thick_file):
    planned = mrisr("plan", thick_file, "--method", "bspline", "--steps", "3", "--overlap", "2", "--samples", "2", "--json")
    assert planned.returncode == 2
    answer = json.loads(planned.stdout)
    assert [e.split(" ")[0] for e in answer["errors"]] == ["overlap", "method", "method"]
    assert answer["output"]["spacing"] == pytest.approx([0.9, 0.9, 0.9]) and answer["files"] == {}
    assert len(planned.stderr.strip().splitlines()) == 3


def test_limits_are_read_from_the_constants_the_checks_use(monkeypatch):
    spec = get_spec("ressrdiff")
    monkeypatch.setattr(backprojection, "MAX_ITERATIONS", 3)
    monkeypatch.setattr(posterior_samples, "MAX_SAMPLES", 5)
    limits = planning.limits()
    assert (limits["max_back_projection"], limits["max_samples"]) == (3, 5)
    planning.check_options(spec, planning.EnhanceOptions(method="ressrdiff", back_projection=3, samples=5))
    with pytest.raises(InputError, match=r"--back-projection 0 \(off\) to 3"):
        planning.check_options(spec, planning.EnhanceOptions(method="ressrdiff", back_projection=4))
    with pytest.raises(InputError, match="--samples 1 to 5"):
        planning.check_options(spec, planning.EnhanceOptions(method="ressrdiff", samples=6))
    overlap = limits["overlap"]
    planning.check_overlap(overlap["minimum"])
    with pytest.raises(InputError):
        planning.check_overlap(overlap["below"])
