"""The panel fills itself from the backend registry: catalog, per-method options, CLI arguments the
real backend parser accepts, time estimates, backend probing and the install plan."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
import vtk  # noqa: E402
from mrisr_slicer_testing import REPO  # noqa: E402

from MRISuperResolutionLib import EnhanceError, EnhanceParameters, MethodCatalog, MethodInfo, dependencies, estimates
from MRISuperResolutionLib.nodeio import defaultTargetSpacing, outputDimensions
from MRISuperResolutionLib.parameters import panelOptions

# How a diffusion method will look in the registry (fields of mrisr.registry.MethodSpec as JSON).
FUTURE_REGISTRY = {
    "default_method": "bspline",
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
    from mrisr.registry import default_method, method_specs

    specs = method_specs()
    assert catalog.names == list(specs)
    assert catalog.defaultMethod == default_method()
    for method in catalog.methods:  # a null range in the registry hides that option in the panel
        spec = specs[method.name]
        assert method.description == spec.description
        assert panelOptions(method) == {
            "steps": spec.steps is not None, "startStep": spec.start_step is not None,
            "patchSize": spec.patch_size is not None, "overlap": spec.patch_size is not None,
            "reference": bool(spec.config.get("needs_reference")), "samples": spec.kind == "diffusion"}
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
                                    "samples": True}
    assert method.patchSize.multipleOf == 16 and method.needsReference
    parameters = EnhanceParameters(steps=20, startStep=5, patchSize=96, overlap=0.5, targetSpacing=(1, 1, 1.5),
                                   device="cuda:0", seed=7, batchSize=2, samples=4, dataConsistency=2)
    args = build_parser().parse_args(["enhance", "in.nii", "out.nii", *parameters.forMethod(method).cliArguments(method)])
    assert (args.method, args.steps, args.start_step, args.patch_size, args.overlap) == ("diffmsr", 20, 5, 96, 0.5)
    assert (args.target_spacing, args.device, args.seed, args.batch_size, args.samples) == ([1.0, 1.0, 1.5], "cuda:0", 7, 2, 4)
    assert args.data_consistency == 2
    baseline = catalog.get("bspline")
    kept = parameters.forMethod(baseline)  # the panel keeps hidden values; they are dropped for a baseline
    args = build_parser().parse_args(["enhance", "in.nii", "out.nii", *kept.cliArguments(baseline)])
    assert (args.steps, args.start_step, args.patch_size, args.overlap, args.samples) == (None, None, None, 0.25, 1)
    assert args.data_consistency == 2  # back-projection works for every method, baselines included
    with pytest.raises(EnhanceError, match="takes no --start-step"):
        EnhanceParameters(startStep=3).cliArguments(baseline)
    with pytest.raises(EnhanceError, match="overlap"):
        EnhanceParameters(overlap=1.0).cliArguments(method)
    with pytest.raises(EnhanceError, match="data consistency 11 is out of range"):
        EnhanceParameters(dataConsistency=11).cliArguments(method)


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


@pytest.mark.parametrize("spacing", [None, (2.0, 2.0, 2.0), (0.7, 0.7, 0.7), (1.0, 1.0, 3.0)])
def test_output_size_follows_the_backend_rule(spacing):
    from mrisr.imaging.geometry import Grid, grid_with_spacing

    node = slicer.vtkMRMLScalarVolumeNode()
    image = vtk.vtkImageData()
    image.SetDimensions(91, 109, 23)
    node.SetAndObserveImageData(image)
    node.SetSpacing(1.2, 1.1, 4.5)
    target = spacing or defaultTargetSpacing(node)
    assert defaultTargetSpacing(node) == (1.1, 1.1, 1.1)
    grid = Grid((91, 109, 23), (1.2, 1.1, 4.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert outputDimensions(node, target) == grid_with_spacing(grid, target).size


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
