"""Scan-adaptive mode: pairs cut from the scan (geometry, degradation, sampling), the per-input cache,
and the budgeted fine-tuning loop (its budget, progress, cancel and cache)."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mrisr.adaptation import cache
from mrisr.adaptation.finetune import adapted_network
from mrisr.adaptation.settings import AdaptSettings
from mrisr.adaptation.pairs import ScanPairs, SliceProfile, coarse_axes, degrade_line, fine_axes, in_plane_edges
from mrisr.errors import CancelledError, InputError
from mrisr.imaging.geometry import Grid, grid_with_spacing
from mrisr.progress import CancelToken

from conftest import make_image, phantom_array


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MRISR_CACHE", str(tmp_path))
    return tmp_path / "adapted"


@pytest.fixture(scope="module")
def thick_scan():
    """A 0.9 × 0.9 × 4.5 mm phantom (x, y, z), normalised to ~[0, 1], with its head mask."""
    array = phantom_array((12, 64, 60), seed=4) / 250.0
    return make_image(array, spacing=(0.9, 0.9, 4.5)), array > 0.1


def test_axes_to_fill_and_to_learn_from():
    assert coarse_axes((0.9, 0.9, 4.5), (0.9, 0.9, 0.9)) == (0,) and fine_axes((0.9, 0.9, 4.5), (0.9,) * 3) == (1, 2)
    # a scan whose x was made coarse but whose z stays as it is on output: learn from y only
    assert coarse_axes((6.5, 0.8, 6.5), (0.8, 0.8, 6.5)) == (2,) and fine_axes((6.5, 0.8, 6.5), (0.8, 0.8, 6.5)) == (1,)
    profile = SliceProfile.of((0.9, 0.9, 4.5))
    assert (profile.thickness_mm, profile.separation_mm) == (4.5, 4.5)
    assert SliceProfile.of((0.9, 0.9, 4.5), 3.0).thickness_mm == 3.0
    with pytest.raises(InputError, match="slice thickness"):
        SliceProfile.of((1, 1, 5), -1.0)


def test_isotropic_input_cannot_adapt(thick_scan):
    image, mask = thick_scan
    volume = sitk.GetArrayFromImage(image)
    with pytest.raises(InputError, match="thick-slice input"):
        ScanPairs(volume, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), SliceProfile(1.0, 1.0), mask)


def test_edges_computed_once_equal_each_planes_own(thick_scan):
    """Pair cutting draws centres from edges precomputed for the volume; they must be what filtering
    each plane on its own gives (away from the plane's border, where the 3D array has neighbours)."""
    from scipy import ndimage

    volume = sitk.GetArrayFromImage(thick_scan[0])
    for across in range(3):
        edges = in_plane_edges(volume, across)
        index = volume.shape[across] // 2
        plane = np.take(volume, index, axis=across)
        own = np.hypot(*np.gradient(ndimage.gaussian_filter(plane, 1.0)))
        np.testing.assert_allclose(np.take(edges, index, axis=across), own, rtol=1e-4, atol=1e-5)


def test_degrade_line_keeps_constants_and_blurs_only_its_axis():
    flat = np.full((40, 30), 0.7, dtype=np.float32)
    np.testing.assert_allclose(degrade_line(flat, 0, 2.0, 5.0), flat, atol=1e-5)
    edge = np.zeros((60, 20), dtype=np.float32)
    edge[30:] = 1.0
    out = degrade_line(edge, 0, 2.0, 5.0)
    assert np.abs(np.diff(out, axis=1)).max() < 1e-5  # nothing happens across the other axis
    assert np.abs(np.diff(out[:, 0])).max() < 0.5 and out[5, 0] < 0.05 and out[55, 0] > 0.95


def test_pairs_are_patches_of_the_scan_blurred_along_one_in_plane_axis(thick_scan):
    image, mask = thick_scan
    volume = sitk.GetArrayFromImage(image)
    pairs = ScanPairs(volume, image.GetSpacing(), (0.9, 0.9, 0.9), SliceProfile.of(image.GetSpacing()), mask, 32)
    condition, target = pairs.batch(np.random.default_rng(0), 16)
    assert condition.shape == target.shape == (16, 1, 32, 32) and condition.dtype == np.float32
    assert np.isin(target, volume).mean() > 0.99  # targets are voxels of the scan's axial planes
    assert target.mean() > volume.mean()  # drawn toward the head
    blurred_along = [np.mean(np.diff(c, axis=a) ** 2) < 0.6 * np.mean(np.diff(t, axis=a) ** 2)
                     for c, t in zip(condition[:, 0], target[:, 0]) for a in (0, 1)]
    assert 0 < sum(blurred_along) < len(blurred_along)  # one axis per pair, both directions over the batch


def test_cache_key_follows_content_and_settings_and_entries_round_trip(isolated_cache):
    volume = np.zeros((4, 5, 6), dtype=np.float32)
    key = cache.cache_key(volume, (1, 1, 5), "ressrdiff", "abc", {"seconds": 60})
    assert key == cache.cache_key(volume.copy(), (1, 1, 5), "ressrdiff", "abc", {"seconds": 60})
    changed = volume.copy()
    changed[0, 0, 0] = 1
    others = [cache.cache_key(changed, (1, 1, 5), "ressrdiff", "abc", {"seconds": 60}),
              cache.cache_key(volume, (1, 1, 4), "ressrdiff", "abc", {"seconds": 60}),
              cache.cache_key(volume, (1, 1, 5), "ressrdiff", "abd", {"seconds": 60}),
              cache.cache_key(volume, (1, 1, 5), "ressrdiff", "abc", {"seconds": 61})]
    assert len({key, *others}) == 5
    assert cache.load_adapted(key) is None
    state = {"w": torch.linspace(-1, 1, 7)}
    cache.store_adapted(key, state, {"steps": 3})
    torch.testing.assert_close(cache.load_adapted(key)["w"], state["w"], atol=1e-3, rtol=0)
    (isolated_cache / f"{key}.safetensors").write_bytes(b"damaged")
    assert cache.load_adapted(key) is None


class Gain(torch.nn.Module):
    """x ↦ g·x with one learnable gain, starting at 1."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.gain * x


def darker(network, condition, target, generator):
    """A learnable stand-in objective on the scan's pairs: map the target to 0.6 × itself."""
    return (network(target) - 0.6 * target).pow(2).mean()


def test_fine_tuning_runs_on_the_scan_for_its_budget_and_a_rerun_comes_from_the_cache(thick_scan, isolated_cache):
    image, mask = thick_scan
    grid = grid_with_spacing(Grid.of(image), (0.9, 0.9, 0.9))
    settings = AdaptSettings(seconds=2.0, patch=32, learning_rate=0.05)
    events, start = [], Gain()
    network = adapted_network(start, "sha", "test", image, grid, darker, settings, "cpu", events.append,
                              CancelToken())
    assert network.gain.item() == pytest.approx(0.6, abs=0.05) and start.gain.item() == 1.0
    progress = [e.done for e in events if e.stage == "adapt"]
    assert progress == sorted(progress) and progress[-1] == events[-1].total == 2
    assert len(list(isolated_cache.glob("*.safetensors"))) == 1
    again = []
    rerun = adapted_network(start, "sha", "test", image, grid, darker, settings, "cpu", again.append, CancelToken())
    assert rerun.gain.item() == pytest.approx(network.gain.item(), abs=1e-3)
    assert [e.message for e in again] == ["adapted weights for this scan from the cache"]


def test_cancel_stops_adaptation_and_caches_nothing(thick_scan, isolated_cache):
    image, mask = thick_scan
    grid = grid_with_spacing(Grid.of(image), (0.9, 0.9, 0.9))
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(CancelledError):
        adapted_network(Gain(), "sha", "test", image, grid, darker, AdaptSettings(seconds=5.0, patch=32),
                        "cpu", lambda e: None, cancel)
    assert not isolated_cache.exists() or not list(isolated_cache.iterdir())


def test_budget_out_of_range_is_refused():
    with pytest.raises(InputError, match="adaptation budget"):
        AdaptSettings(seconds=0)


def test_enhance_adapts_ressrdiff_once_and_reuses_it_for_other_steps(oblique_thick, isolated_cache):
    from mrisr.pipeline import EnhanceOptions, enhance

    first, second = [], []
    options = EnhanceOptions(method="ressrdiff", steps=1, adapt=2.0, target_spacing=(0.9, 0.9, 1.25))
    result = enhance(oblique_thick, options, progress=first.append)
    assert result.settings["adapt"] == 2.0 and result.settings["slice_thickness"] is None
    assert any(e.stage == "adapt" and "step" in e.message for e in first)
    assert len(list(isolated_cache.glob("*.safetensors"))) == 1
    plain = enhance(oblique_thick, EnhanceOptions(method="ressrdiff", steps=1, target_spacing=(0.9, 0.9, 1.25)))
    assert not np.allclose(sitk.GetArrayFromImage(plain.image), sitk.GetArrayFromImage(result.image))
    enhance(oblique_thick, EnhanceOptions(method="ressrdiff", steps=2, adapt=2.0, target_spacing=(0.9, 0.9, 1.25)),
            progress=second.append)
    assert [e.message for e in second if e.stage == "adapt"] == ["adapted weights for this scan from the cache"]


@pytest.mark.parametrize("options, message", [
    ({"method": "bspline", "adapt": 60.0}, "cannot adapt to the scan"),
    ({"method": "ressrdiff", "adapt": 1e6}, "adaptation budget"),
    ({"method": "ressrdiff", "adapt": 60.0, "slice_thickness": 0.0}, "slice thickness"),
])
def test_plan_refuses_adaptation_it_cannot_do(tmp_path, oblique_thick, options, message):
    from mrisr.io.volumes import write_volume
    from mrisr.plan import EnhanceOptions, catalog, plan_run

    path = write_volume(oblique_thick, tmp_path / "in.nrrd")
    errors = plan_run(path, EnhanceOptions(**options)).errors
    assert len(errors) == 1 and message in errors[0]
    limits = catalog()["limits"]["adapt_seconds"]
    assert 0 < limits["default"] <= limits["maximum"]


def test_pairs_from_a_scan_smaller_than_a_patch_have_the_patch_shape():
    array = phantom_array((12, 20, 8), seed=1) / 250.0  # x 8 × y 20 samples, z 12
    pairs = ScanPairs(array, (8.0, 2.0, 2.0), (2.0, 2.0, 2.0), SliceProfile(8.0, 8.0), array > 0.1, 64)
    condition, target = pairs.batch(np.random.default_rng(3), 6)
    assert condition.shape == target.shape == (6, 1, 64, 64) and np.isfinite(condition).all()
