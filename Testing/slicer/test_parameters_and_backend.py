"""The panel fills itself from the backend: catalog and limits (`mrisr methods --json`), output grids
and refusals (`mrisr plan`), per-method options, CLI arguments the real backend parser accepts, time
estimates, backend probing and the install plan. A backend with other limits moves the panel with it."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
import vtk  # noqa: E402
from mrisr_slicer_testing import REPO  # noqa: E402

from MRISuperResolutionLib import EnhanceError, EnhanceParameters, MethodCatalog, MethodInfo, dependencies, estimates
from MRISuperResolutionLib.parameters import panelOptions

# A hook that makes the backend's Python one with other limits: Python imports `sitecustomize` from
# PYTHONPATH at start-up, so every backend process of the test (catalog, plan, enhance) sees them.
OTHER_LIMITS_HOOK = """
import mrisr.imaging.backprojection, mrisr.inference.posterior_samples
mrisr.imaging.backprojection.MAX_ITERATIONS = 3
mrisr.inference.posterior_samples.MAX_SAMPLES = 4
"""

# How a diffusion method will look in the registry (fields of mrisr.registry.MethodSpec as JSON).
FUTURE_REGISTRY = {
    "default_method": "bspline",
    "limits": {"max_samples": 8, "max_back_projection": 5, "overlap": {"default": 0.25, "minimum": 0.0, "below": 1.0},
               "max_voxels": 10**8},
    "methods": [
        {"name": "bspline", "kind": "interpolation", "description": "B-spline", "steps": None, "start_step": None,
         "patch_size": None, "config": {}},
        {"name": "diffmsr", "kind": "diffusion", "description": "multi-contrast",
         "steps": {"default": 50, "minimum": 1, "maximum": 1000, "multiple_of": 1},
         "start_step": {"default": 20, "minimum": 0, "maximum": 1000, "multiple_of": 1},
         "patch_size": {"default": 64, "minimum": 32, "maximum": 256, "multiple_of": 16},
         "config": {"needs_reference": True, "seconds_per_megavoxel": {"cpu": 30.0, "cuda": 0.5}}},
    ],
}


def test_catalog_is_the_backend_registry(catalog):
    from mrisr.imaging.backprojection import MAX_ITERATIONS
    from mrisr.inference.posterior_samples import MAX_SAMPLES
    from mrisr.registry import default_method, method_specs

    specs = method_specs()
    assert (catalog.limits.maxSamples, catalog.limits.maxBackProjection) == (MAX_SAMPLES, MAX_ITERATIONS)
    assert catalog.names == list(specs)
    assert catalog.defaultMethod == default_method()
    for method in catalog.methods:  # a null range in the registry hides that option in the panel
        spec = specs[method.name]
        assert method.description == spec.description
        assert panelOptions(method) == {
            "steps": spec.steps is not None, "startStep": spec.start_step is not None,
            "patchSize": spec.patch_size is not None, "overlap": spec.patch_size is not None,
            "reference": bool(spec.config.get("needs_reference")), "samples": spec.kind == "diffusion",
            "adapt": bool(spec.config.get("adaptation"))}
        if spec.steps is not None:
            assert (method.steps.default, method.steps.minimum, method.steps.maximum) == (
                spec.steps.default, spec.steps.minimum, spec.steps.maximum)
    assert not any(panelOptions(catalog.get(name))["steps"] for name in ("nearest", "linear", "bspline", "lanczos"))
    with pytest.raises(EnhanceError, match="unknown method 'magic'"):
        catalog.get("magic")


def test_diffusion_entries_show_their_options_and_pass_them_to_the_backend():
    from mrisr.cli import build_parser

    catalog = MethodCatalog.fromRegistry(FUTURE_REGISTRY)
    method = catalog.get("diffmsr")
    assert panelOptions(method) == {"steps": True, "startStep": True, "patchSize": True, "overlap": True, "reference": True,
                                    "samples": True, "adapt": False}
    assert method.patchSize.multipleOf == 16 and method.needsReference
    parameters = EnhanceParameters(steps=20, startStep=5, patchSize=96, overlap=0.5, targetSpacing=(1, 1, 1.5),
                                   device="cuda:0", seed=7, batchSize=2, samples=4, backProjection=2)
    args = build_parser().parse_args(["enhance", "in.nii", "out.nii", *parameters.forMethod(method).cliArguments(method)])
    assert (args.method, args.steps, args.start_step, args.patch_size, args.overlap) == ("diffmsr", 20, 5, 96, 0.5)
    assert (args.target_spacing, args.device, args.seed, args.batch_size, args.samples) == ([1.0, 1.0, 1.5], "cuda:0", 7, 2, 4)
    assert args.back_projection == 2
    baseline = catalog.get("bspline")
    kept = parameters.forMethod(baseline)  # the panel keeps hidden values; they are dropped for a baseline
    args = build_parser().parse_args(["enhance", "in.nii", "out.nii", *kept.cliArguments(baseline)])
    assert (args.steps, args.start_step, args.patch_size, args.overlap, args.samples) == (None, None, None, 0.25, 1)
    assert args.back_projection == 2  # back-projection works for every method, baselines included
    assert catalog.limits.panelRanges() == {"samples": (1, 8), "backProjection": (0, 5), "overlap": (0.0, 0.95),
                                            "adaptSeconds": (0.0, 0.0)}  # a backend without adaptation


def test_time_estimates(catalog):
    voxels = 197 * 233 * 189
    assert estimates.describeEstimate(catalog.get("bspline"), voxels) == "≈ 5 s on CPU (8.7 million output voxels)"
    assert estimates.describeEstimate(catalog.get("lanczos"), voxels).startswith("≈ 85 s on CPU")
    diffusion = MethodCatalog.fromRegistry(FUTURE_REGISTRY).get("diffmsr")
    assert estimates.describeEstimate(diffusion, voxels) == "≈ 4 min on CPU, ≈ 7 s on GPU (8.7 million output voxels)"
    assert estimates.estimateSeconds(diffusion, 10**6, "cuda:1", steps=100) == pytest.approx(2.5 + 1.0)
    assert estimates.estimateSeconds(diffusion, 10**6, "cuda:1", steps=100, samples=4) == pytest.approx(2.5 + 4.0)
    unknown = MethodInfo("newmethod", "diffusion", "no rates yet")
    assert estimates.estimateSeconds(unknown, voxels) is None
    assert "no time measured" in estimates.describeEstimate(unknown, voxels)


def blank_node(dimensions=(91, 109, 23), spacing=(1.2, 1.1, 4.5)):
    """A scalar volume node (not in a scene) of zeros with the given grid."""
    node = slicer.vtkMRMLScalarVolumeNode()
    image = vtk.vtkImageData()
    image.SetDimensions(*dimensions)
    image.AllocateScalars(vtk.VTK_FLOAT, 1)
    image.GetPointData().GetScalars().Fill(0.0)
    node.SetAndObserveImageData(image)
    node.SetSpacing(*spacing)
    return node


@pytest.mark.parametrize("spacing", [None, (2.0, 2.0, 2.0), (0.7, 0.7, 0.7), (1.0, 1.0, 3.0)])
def test_the_panel_gets_the_output_grid_from_the_backends_plan(logic, spacing):
    from mrisr.imaging.geometry import Grid, finest_isotropic_spacing, grid_with_spacing

    grid = Grid((91, 109, 23), (1.2, 1.1, 4.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    target = spacing or finest_isotropic_spacing(grid)
    plan = logic.plan(blank_node(), EnhanceParameters("bspline", targetSpacing=spacing))
    assert plan.errors == ()
    assert plan.outputSize == grid_with_spacing(grid, target).size
    assert plan.outputSpacing == pytest.approx(target)
    assert plan.outputVoxels == grid_with_spacing(grid, target).num_voxels
    assert os.listdir(logic.tempRoot) == []
    refused = logic.plan(blank_node(), EnhanceParameters("bspline", targetSpacing=(0.01, 0.01, 0.01)))
    assert refused.outputSize is None and "budget" in refused.errors[0]


def test_a_backend_with_other_limits_moves_the_panel_and_the_checks(world, logic, tmp_path, monkeypatch):
    """Done-when of issue 17: change a backend limit, and the panel's ranges and the refusals follow."""
    node = blank_node((16, 16, 6), (1.0, 1.0, 4.0))
    usual = logic.plan(node, EnhanceParameters("bspline", backProjection=4))
    assert usual.errors == ()
    (tmp_path / "sitecustomize.py").write_text(OTHER_LIMITS_HOOK)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    other = dependencies.loadCatalog(sys.executable)
    assert other.limits.panelRanges()["backProjection"] == (0, 3) and other.limits.panelRanges()["samples"] == (1, 4)
    logic.setMethodCatalog(other)
    assert logic.plan(node, EnhanceParameters("bspline", backProjection=3)).errors == ()
    inputNode = world.scene.AddNode(node)
    before = world.nodeIDs()
    for kwargs in (dict(backProjection=4), dict(dataConsistency=4)):  # dataConsistency: the former name
        with pytest.raises(EnhanceError, match=r"back-projection 4 is out of range: use --back-projection 0 \(off\) to 3"):
            logic.enhance(inputNode, method="bspline", **kwargs)
    with pytest.raises(EnhanceError, match="samples 5 is out of range: use --samples 1 to 4"):
        logic.enhance(inputNode, method="ressrdiff", samples=5)
    assert world.nodeIDs() == before and os.listdir(logic.tempRoot) == []


def test_background_probe_reports_methods_torch_and_devices():
    probe = dependencies.startProbe(sys.executable)
    deadline = time.monotonic() + 120
    while not probe.finished:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    status = dependencies.statusFromProbe(sys.executable, probe)
    assert status.ready, status.problems
    assert status.catalog.names and status.torchVersion and status.mrisrVersion
    labels = [value for _, value in status.deviceChoices()]
    assert labels[:2] == ["auto", "cpu"] and len(labels) == 2 + len(status.cudaDevices)
    missing = dependencies.probeBackend(str(REPO / "no-such-python"))
    assert not missing.ready and "cannot run" in missing.summary()
    failed = dependencies.statusFromProbe("x", dependencies.startProbe(str(REPO / "no-such-python")))
    assert not failed.ready and "failed to start" in failed.summary()


def test_install_plan_pins_slicers_numpy_and_simpleitk_and_installs_torch_first(tmp_path, monkeypatch):
    calls = []

    def pipInstall(args):
        constraints = Path(args[args.index("-c") + 1]).read_text() if "-c" in args else ""
        calls.append((args, constraints))

    dependencies.installBackend(pipInstall, installTorch=lambda: calls.append(("torch", "")))
    assert calls[0] == ("torch", "")
    (requirementArgs, constraints), (backendArgs, _) = calls[1:]
    assert requirementArgs[:2] == ["-r", str(dependencies.REQUIREMENTS_FILE)]
    assert "SimpleITK==" in constraints and "numpy==" in constraints
    assert backendArgs == ["--no-deps", str(REPO / "python_backend")]
    monkeypatch.delenv("MRISR_BACKEND_SOURCE", raising=False)
    monkeypatch.setattr(dependencies, "MODULE_DIR", tmp_path / "qt-scripted-modules")
    with pytest.raises(EnhanceError, match="MRISR_BACKEND_SOURCE"):
        dependencies.installBackend(pipInstall)
