"""Fast / Balanced / Best come from the backend's registry (`mrisr methods --json`): its default method,
its measured rates, its defaults and its adaptation flag and budget, or its own presets when it exports
them. Change the registry and the presets follow; every preset is a run the real backend accepts."""

from __future__ import annotations

import copy
import sys

import pytest
pytest.importorskip("slicer", reason="slicer-core is not installed")

from MRISuperResolutionLib import EnhanceParameters, MethodCatalog, dependencies, estimates  # noqa: E402
from MRISuperResolutionLib.presets import (BALANCED, BEST, FAST, PRESET_NAMES, matchingPreset, presetNamed,  # noqa: E402
                                           presetsFor)

VOXELS = 200 * 240 * 200


@pytest.fixture(scope="module")
def registry() -> dict:
    """The real backend's `mrisr methods --json` document."""
    return dependencies.runBackendJson(sys.executable, ["methods", "--json"])


def expected_seconds(catalog, preset) -> float:
    method = catalog.get(preset.method)
    return estimates.estimateSeconds(method, VOXELS, "cpu", preset.steps, preset.samples, preset.adaptSeconds)


def test_presets_of_the_real_backend_are_the_ones_it_exports(catalog, registry):
    presets = presetsFor(catalog)
    assert tuple(p.name for p in presets) == PRESET_NAMES
    for preset, entry in zip(presets, registry["presets"]):
        assert (preset.method, preset.why) == (entry["method"], entry["why"])
        if "steps" in entry:
            assert preset.steps == entry["steps"]
    fast, balanced, best = presets
    assert fast.method == catalog.defaultMethod and fast.adaptSeconds == 0 and fast.samples == 1
    assert all(not catalog.get(p.method).needsReference for p in presets)  # a preset never asks for a second volume
    assert catalog.get(balanced.method).kind == "diffusion" and balanced.adaptSeconds == 0
    assert catalog.get(best.method).adapts and best.adaptSeconds == catalog.limits.adaptDefaultSeconds > 0
    times = [expected_seconds(catalog, p) for p in presets]
    assert times == sorted(times) and times[0] < times[1] < times[2], times


def test_presets_derived_from_the_registry_when_none_are_exported(registry):
    derived = copy.deepcopy(registry)
    derived.pop("presets")
    catalog = MethodCatalog.fromRegistry(derived)
    fast, balanced, best = presetsFor(catalog)
    assert fast.method == catalog.defaultMethod
    assert catalog.get(balanced.method).kind == "diffusion" and balanced.adaptSeconds == 0
    assert balanced.steps == catalog.get(balanced.method).steps.default
    assert catalog.get(best.method).adapts and best.adaptSeconds == catalog.limits.adaptDefaultSeconds > 0


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_is_a_run_the_backend_accepts(logic, name):
    from mrisr.cli import build_parser

    from test_parameters_and_backend import blank_node

    preset = presetNamed(logic.presets(), name)
    method = logic.methodCatalog().get(preset.method)
    parameters = preset.parameters(EnhanceParameters(device="cpu", seed=3)).forMethod(method)
    assert (parameters.device, parameters.seed) == ("cpu", 3)  # a preset keeps what it does not choose
    plan = logic.plan(blank_node((40, 48, 12), (1.0, 1.0, 4.0)), parameters)
    assert plan.errors == () and plan.outputVoxels == 40 * 48 * 48
    args = build_parser().parse_args(["enhance", "in.nii", "out.nii", *parameters.cliArguments(method)])
    assert args.method == preset.method and args.samples == preset.samples
    assert (args.steps, args.adapt or 0.0) == (preset.steps, preset.adaptSeconds)


def test_other_measurements_give_other_presets(registry):
    registry = {k: v for k, v in registry.items() if k != "presets"}  # the rule, not the exported choice
    slower = copy.deepcopy(registry)
    rates = {m["name"]: m["config"]["seconds_per_megavoxel"]["cpu"] for m in slower["methods"]}
    balanced = presetsFor(MethodCatalog.fromRegistry(registry))[1].method
    for method in slower["methods"]:
        if method["name"] == balanced:
            method["config"]["seconds_per_megavoxel"]["cpu"] = 10 * max(rates.values())
    moved = presetsFor(MethodCatalog.fromRegistry(slower))[1].method
    assert moved != balanced
    assert moved == min((r, n) for n, r in rates.items()
                        if n != balanced and next(m for m in registry["methods"] if m["name"] == n)["kind"] == "diffusion"
                        and not next(m for m in registry["methods"] if m["name"] == n)["config"].get("needs_reference"))[1]
    no_adaptation = copy.deepcopy(registry)
    for method in no_adaptation["methods"]:
        method["config"].pop("adaptation", None)
    fast, balanced_preset, best = presetsFor(MethodCatalog.fromRegistry(no_adaptation))
    assert (best.method, best.adaptSeconds) == (balanced_preset.method, 0.0)
    interpolation_only = copy.deepcopy(registry)
    interpolation_only["methods"] = [m for m in registry["methods"] if m["kind"] == "interpolation"]
    assert [p.name for p in presetsFor(MethodCatalog.fromRegistry(interpolation_only))] == [FAST]


def test_presets_the_backend_exports_are_used_as_they_are(registry):
    exported = copy.deepcopy(registry)
    exported["presets"] = [{"name": "Fast", "method": "linear"},
                           {"name": "Balanced", "method": "ressrdiff", "steps": 1},
                           {"name": "Best", "method": "ressrdiff", "steps": 1, "adapt": True, "why": "measured"}]
    catalog = MethodCatalog.fromRegistry(exported)
    fast, balanced, best = presetsFor(catalog)
    assert (fast.method, balanced.method, balanced.steps, balanced.adaptSeconds) == ("linear", "ressrdiff", 1, 0.0)
    assert (best.steps, best.adaptSeconds, best.why) == (1, catalog.limits.adaptDefaultSeconds, "measured")


def test_changed_settings_are_no_longer_a_preset(catalog):
    presets = presetsFor(catalog)
    for preset in presets:
        assert matchingPreset(presets, preset.parameters(EnhanceParameters(seed=9)), catalog) is preset
    best = presetNamed(presets, BEST)
    assert matchingPreset(presets, best.parameters().replace(adapt=0.0), catalog) is not best
    assert matchingPreset(presets, best.parameters().replace(adapt=60.0), catalog) is None
    balanced = presetNamed(presets, BALANCED)
    assert matchingPreset(presets, balanced.parameters().replace(steps=balanced.steps + 1), catalog) is None


def test_the_console_api_takes_a_preset(world, logic):
    from test_parameters_and_backend import blank_node

    node = world.scene.AddNode(blank_node((20, 24, 6), (1.0, 1.0, 4.0)))
    output = logic.enhance(node, preset="fast")
    assert f"({logic.methodCatalog().defaultMethod})" in output.GetName()
    with pytest.raises(Exception, match="unknown preset 'quick'"):
        logic.enhance(node, preset="quick")
