"""The default output grid of a fine in-plane scan: never finer than the method was trained for, never over
the default voxel budget, and shown by `mrisr plan --json` with its size, spacing, voxels and memory.

The scan is the MNI152 T1 template resampled onto a 0.45 × 0.45 × 5 mm grid over its whole extent
(438 × 518 × 38 voxels): the geometry of a clinical thick-slice acquisition with real anatomy in it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import SimpleITK as sitk

from mrisr import plan as planning
from mrisr.imaging.geometry import Grid, finest_isotropic_spacing, grid_with_spacing, resample
from mrisr.registry import get_spec
from mrisr.simulation.template import mni_image


@pytest.fixture(scope="module")
def fine_inplane():
    """The MNI152 T1 on a 0.45 × 0.45 × 5 mm grid over the template's extent, and its file."""
    template = mni_image("t1")
    grid = grid_with_spacing(Grid.of(template), (0.45, 0.45, 5.0))
    return resample(template, grid, "linear")


@pytest.fixture(scope="module")
def fine_inplane_file(fine_inplane, tmp_path_factory):
    path = tmp_path_factory.mktemp("grid") / "fine_inplane.nrrd"
    sitk.WriteImage(fine_inplane, str(path))
    return path


def test_the_old_default_would_have_been_a_90_megavoxel_run(fine_inplane):
    grid = Grid.of(fine_inplane)
    assert grid.spacing == pytest.approx((0.45, 0.45, 5.0))
    assert grid_with_spacing(grid, finest_isotropic_spacing(grid)).num_voxels > 80_000_000


@pytest.mark.parametrize("method", ["ressrdiff", "sr3pdm", "diffusioniqt"])
def test_a_learned_method_gets_the_finest_spacing_it_was_trained_for(fine_inplane, method):
    spec = get_spec(method)
    low = spec.config["training_range"]["output_spacing_mm"][0]
    grid = planning.output_grid(fine_inplane, planning.EnhanceOptions(method=method), spec)
    spacing = grid.spacing[0]
    assert grid.spacing == (spacing, spacing, spacing) and spacing >= low - 1e-9
    assert grid.num_voxels <= planning.DEFAULT_GRID_MAX_VOXELS
    if spacing > low + 1e-9:  # the training range allows finer, but the voxel budget does not
        finer = grid_with_spacing(Grid.of(fine_inplane), (spacing - planning.DEFAULT_SPACING_STEP_MM,) * 3)
        assert finer.num_voxels > planning.DEFAULT_GRID_MAX_VOXELS
    assert planning.training_range_warnings(spec, fine_inplane.GetSpacing(), grid.spacing) == []


def test_interpolation_is_coarsened_to_the_budget_and_a_given_spacing_is_kept(fine_inplane):
    spec = get_spec("bspline")
    grid = planning.output_grid(fine_inplane, planning.EnhanceOptions(method="bspline"), spec)
    spacing = grid.spacing[0]
    assert grid.spacing == (spacing, spacing, spacing) and 0.45 < spacing < 0.8
    assert grid.num_voxels <= planning.DEFAULT_GRID_MAX_VOXELS
    finer = grid_with_spacing(Grid.of(fine_inplane), (spacing - planning.DEFAULT_SPACING_STEP_MM,) * 3)
    assert finer.num_voxels > planning.DEFAULT_GRID_MAX_VOXELS  # the finest spacing that fits
    tight = planning.output_grid(fine_inplane, planning.EnhanceOptions(method="bspline", max_voxels=5_000_000), spec)
    assert tight.num_voxels <= 5_000_000
    chosen = planning.output_grid(fine_inplane, planning.EnhanceOptions(target_spacing=(0.45, 0.45, 0.45)), spec)
    assert chosen.spacing == pytest.approx((0.45, 0.45, 0.45))  # the user's spacing, under --max-voxels


def test_a_coarse_scan_keeps_its_finest_spacing():
    template = mni_image("t1")
    coarse = resample(template, grid_with_spacing(Grid.of(template), (1.0, 1.0, 4.0)), "linear")
    grid = planning.output_grid(coarse, planning.EnhanceOptions(method="ressrdiff"), get_spec("ressrdiff"))
    assert grid.spacing == pytest.approx((1.0, 1.0, 1.0))


def test_plan_json_shows_size_spacing_voxels_memory_and_time(fine_inplane_file, tmp_path):
    answer = subprocess.run([sys.executable, "-m", "mrisr.cli", "plan", str(fine_inplane_file), str(tmp_path / "o.nii.gz"),
                             "--method", "ressrdiff", "--json"], capture_output=True, text=True, timeout=300)
    assert answer.returncode == 0, answer.stderr
    plan = json.loads(answer.stdout)
    output = plan["output"]
    low = get_spec("ressrdiff").config["training_range"]["output_spacing_mm"][0]
    assert output["spacing"][0] == output["spacing"][1] == output["spacing"][2] >= low
    assert output["voxels"] == output["size"][0] * output["size"][1] * output["size"][2] <= 24_000_000
    assert output["memory_mib"] == pytest.approx(4 * output["voxels"] / 2**20, abs=0.05)
    assert 0 < output["device_memory_mib"] < 4096
    assert plan["expected_seconds"] == pytest.approx(sum(plan["stages"].values()), abs=0.5)
    rate = get_spec("ressrdiff").config["seconds_per_megavoxel"]["cpu"]
    assert plan["stages"]["sampling"] + plan["stages"]["resample"] == pytest.approx(rate * output["voxels"] / 1e6, rel=1e-3)
    assert plan["errors"] == [] and plan["warnings"] == []
