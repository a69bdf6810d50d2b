"""Adapt to this scan, the self-check and the training-range warnings, as the panel and the console get
them from the real backend: the checkbox follows the registry's "adaptation" flag, its budget the
backend's limits, its time goes into the estimate, and a learned run's self-check line reaches the job
and the output node."""

from __future__ import annotations

import json
import os

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from MRISuperResolutionLib import EnhanceError, EnhanceParameters, estimates  # noqa: E402
from MRISuperResolutionLib.parameters import panelOptions  # noqa: E402


def test_adaptation_is_offered_where_the_registry_allows_it_with_the_backends_budget(catalog):
    from mrisr.adaptation.settings import DEFAULT_SECONDS, MAX_SECONDS
    from mrisr.cli import build_parser
    from mrisr.registry import method_specs

    for name, spec in method_specs().items():
        assert panelOptions(catalog.get(name))["adapt"] == bool(spec.config.get("adaptation")), name
    assert panelOptions(catalog.get("ressrdiff"))["adapt"] and not panelOptions(catalog.get("bspline"))["adapt"]
    limits = catalog.limits
    assert (limits.adaptDefaultSeconds, limits.adaptMaximumSeconds) == (DEFAULT_SECONDS, MAX_SECONDS)
    assert limits.panelRanges()["adaptSeconds"] == (1.0, MAX_SECONDS)
    chosen = EnhanceParameters(adapt=45.0, sliceThickness=5.0)
    assert chosen.forMethod(catalog.get("bspline")).adapt == 0.0  # the panel's box is off for other methods
    ressrdiff = catalog.get("ressrdiff")
    args = build_parser().parse_args(["enhance", "in.nii", "out.nii", *chosen.forMethod(ressrdiff).cliArguments(ressrdiff)])
    assert (args.adapt, args.slice_thickness) == (45.0, 5.0)
    assert build_parser().parse_args(["enhance", "i", "o", *EnhanceParameters().cliArguments(ressrdiff)]).adapt == 0.0


def test_the_estimate_includes_the_adaptation_budget(catalog):
    bspline, voxels = catalog.get("bspline"), 197 * 233 * 189
    plain = estimates.estimateSeconds(bspline, voxels)
    assert estimates.estimateSeconds(bspline, voxels, adaptSeconds=180.0) == pytest.approx(plain + 180.0)
    assert estimates.describeEstimate(bspline, voxels, adaptSeconds=180.0) == (
        "≈ 3 min on CPU (8.7 million output voxels, 3 min of it adapting to the scan)")
    assert estimates.describeEstimate(catalog.get("ressrdiff"), voxels, adaptSeconds=60.0) == (
        "≈ 2 min on CPU (8.7 million output voxels, 60 s of it adapting to the scan)")


def test_every_registered_method_has_a_measured_cpu_rate(catalog):
    """The backend's registry carries each method's measured rate, so the panel never says "no time
    measured" for a method the backend ships (the rates are not copied on the Slicer side)."""
    voxels = 197 * 233 * 189
    for method in catalog.methods:
        seconds = estimates.estimateSeconds(method, voxels)
        assert seconds is not None and seconds > estimates.STARTUP_SECONDS, method.name
    learned = [estimates.estimateSeconds(catalog.get(name), voxels) for name in ("bspline", "ressrdiff", "diffusioniqt")]
    assert learned == sorted(learned)  # interpolation < one 2D network pass per slice < 3D diffusion


def test_a_method_without_adaptation_is_refused_with_the_backends_message(world, thick_volume, logic):
    inputNode = world.loadVolume(thick_volume, "T1")
    before = world.nodeIDs()
    with pytest.raises(EnhanceError, match="adapt"):
        logic.enhance(inputNode, method="bspline", adapt=30.0)
    assert world.nodeIDs() == before and os.listdir(world.tempRoot) == []


def test_training_range_warnings_come_with_the_plan_and_do_not_block(world, thick_volume, logic):
    inputNode = world.loadVolume(thick_volume, "T1")
    outside = logic.plan(inputNode, EnhanceParameters("ressrdiff", targetSpacing=(2.5, 2.5, 2.5)))
    assert outside.errors == () and outside.warnings
    assert all("\n" not in warning and "ressrdiff was trained for" in warning for warning in outside.warnings)
    assert logic.plan(inputNode, EnhanceParameters("bspline", targetSpacing=(2.5, 2.5, 2.5))).warnings == ()


@pytest.mark.slow
def test_an_adapted_run_reports_its_self_check_to_the_job_and_the_node(world, thick_volume, logic, tmp_path, monkeypatch):
    monkeypatch.setenv("MRISR_CACHE", str(tmp_path / "cache"))  # the backend caches adapted weights there
    inputNode = world.loadVolume(thick_volume, "T1")
    job = logic.enhance(inputNode, method="ressrdiff", steps=1, targetSpacing=(2.5, 2.5, 2.5), adapt=4.0,
                        blocking=False)
    assert job.warnings  # 2.5 mm is outside the training range: said before the run, which goes ahead
    outputNode = job.wait(timeout=600)
    stages = [update.stage for update in job.updates]
    assert "adapt" in stages and stages.index("adapt") < stages.index("self-check")
    assert job.selfCheck.startswith("self-check ") and "B-spline" in job.selfCheck and "\n" not in job.selfCheck
    assert job.selfCheck in job.statusText()
    assert logic.selfCheck(outputNode) == job.selfCheck
    assert outputNode.GetName() == "T1 enhanced (ressrdiff, 1 step, adapted)"
    assert json.loads(outputNode.GetAttribute("MRISuperResolution.Parameters"))["adapt"] == 4.0
    assert (tmp_path / "cache").is_dir()
    interpolation = logic.enhance(inputNode, method="bspline", targetSpacing=(2.0, 2.0, 2.0))
    assert logic.selfCheck(interpolation) == ""  # interpolation is its own baseline: no self-check
