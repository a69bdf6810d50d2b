"""The panel's Fast / Balanced / Best presets exported by `mrisr methods --json`: each names a registered
method with options the backend accepts, and says where its choice comes from."""

import pytest
import SimpleITK as sitk

from mrisr.plan import EnhanceOptions, catalog, plan_run
from mrisr.registry import get_spec, presets

from conftest import make_image, phantom_array


def test_presets_are_exported_in_order_and_explained():
    exported = catalog()["presets"]
    assert [p["name"] for p in exported] == ["Fast", "Balanced", "Best"]
    assert exported == presets()
    assert all(len(p["why"]) > 40 for p in exported)
    assert exported[0]["method"] == catalog()["default_method"]


@pytest.mark.parametrize("preset", presets(), ids=lambda p: p["name"])
def test_every_preset_is_a_run_the_backend_accepts(preset, tmp_path):
    spec = get_spec(preset["method"])
    if preset.get("adapt"):
        assert spec.config.get("adaptation") is True
    image = make_image(phantom_array((10, 48, 44), seed=1) / 250.0, spacing=(0.9, 0.9, 4.5))
    adapt = 180.0 if preset.get("adapt") is True else float(preset.get("adapt") or 0.0)
    options = EnhanceOptions(method=preset["method"], steps=preset.get("steps"), samples=preset.get("samples", 1),
                             adapt=adapt)
    path = tmp_path / "thick.nii.gz"
    sitk.WriteImage(image, str(path))
    plan = plan_run(path, options)
    assert not plan.errors, plan.errors
