import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.errors import CancelledError, InputError
from mrisr.imaging.geometry import Grid
from mrisr.evaluation.metrics import psnr
from mrisr.pipeline import EnhanceOptions, enhance, enhance_file
from mrisr.progress import CancelToken
from mrisr.registry import get_spec, method_specs
from mrisr.io.volumes import read_volume, write_volume


def test_output_geometry_and_scale(oblique_thick):
    result = enhance(oblique_thick, EnhanceOptions(method="linear"))
    out = result.image
    assert out.GetSize() == (40, 44, 50)
    np.testing.assert_allclose(out.GetSpacing(), (0.9, 0.9, 0.9))
    assert out.GetDirection() == oblique_thick.GetDirection()
    assert out.GetPixelID() == sitk.sitkFloat32
    values = sitk.GetArrayFromImage(out)
    source = sitk.GetArrayFromImage(oblique_thick)
    # Linear interpolation stays within the input's range, in the input's intensity scale.
    assert values.min() >= source.min() - 1e-3 and values.max() <= source.max() + 1e-3
    assert values.max() > 0.9 * source.max()


@pytest.mark.parametrize("method", ["nearest", "linear", "bspline", "lanczos"])
def test_baselines_reproduce_the_input_at_its_own_spacing(phantom_image, method):
    """At the input spacing every interpolator returns the input (up to normalisation round-off)."""
    out = enhance(phantom_image, EnhanceOptions(method=method)).image
    np.testing.assert_allclose(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(phantom_image), atol=1e-3)


def test_bspline_beats_nearest_on_a_smooth_volume():
    zz, yy, xx = np.meshgrid(*(np.linspace(0, 2 * np.pi, n) for n in (60, 40, 40)), indexing="ij")
    truth = (100 + 50 * np.sin(zz) * np.cos(yy) * np.sin(xx / 2)).astype(np.float32)
    thick = sitk.GetImageFromArray(truth[2::5])
    thick.SetSpacing((1.0, 1.0, 5.0))
    scores = {}
    for method in ("nearest", "bspline"):
        out = sitk.GetArrayFromImage(enhance(thick, EnhanceOptions(method=method)).image)
        scores[method] = psnr(out[5:-5], truth[5:-5])
    assert scores["bspline"] > scores["nearest"] + 5


def test_registry_lists_baselines_with_descriptions():
    specs = method_specs()
    assert {"nearest", "linear", "bspline", "lanczos"} <= set(specs)
    assert all(s.description for s in specs.values())


@pytest.mark.parametrize(
    "options, message",
    [
        (EnhanceOptions(method="magic"), "unknown method"),
        (EnhanceOptions(method="bspline", steps=10), "takes no --steps"),
        (EnhanceOptions(method="bspline", overlap=1.5), "overlap"),
        (EnhanceOptions(method="bspline", target_spacing=(0, 1, 1)), "spacing"),
        (EnhanceOptions(method="bspline", target_spacing=(0.01, 0.01, 0.01), max_voxels=10**6), "budget"),
        (EnhanceOptions(method="bspline", device="cuda:7"), "device"),
        (EnhanceOptions(method="bspline", device="tpu"), "unknown device"),
    ],
)
def test_bad_options_raise_one_line_errors(phantom_image, options, message):
    with pytest.raises(InputError, match=message) as info:
        enhance(phantom_image, options)
    assert "\n" not in str(info.value)


def test_cancel_before_start_writes_nothing(tmp_path, phantom_image):
    source = write_volume(phantom_image, tmp_path / "in.nii.gz")
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        enhance_file(source, tmp_path / "out.nii.gz", EnhanceOptions(method="bspline"), cancel=token)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz"]


def test_enhance_file_round_trip_and_input_untouched(tmp_path, oblique_thick):
    source = write_volume(oblique_thick, tmp_path / "in.nrrd")
    before = source.read_bytes()
    enhance_file(source, tmp_path / "out.nii.gz", EnhanceOptions(method="bspline"))
    assert source.read_bytes() == before
    out = read_volume(tmp_path / "out.nii.gz")
    assert Grid.of(out).size == (40, 44, 50)
    with pytest.raises(InputError, match="input file"):
        enhance_file(source, source, EnhanceOptions(method="bspline"))
    assert source.read_bytes() == before


def test_default_method_is_registered():
    from mrisr.registry import default_method

    assert get_spec(default_method()).name == default_method()


def test_start_step_alone_caps_the_default_steps():
    from mrisr.pipeline import resolve_settings

    spec = get_spec("sr3pdm")
    assert resolve_settings(spec, EnhanceOptions(method="sr3pdm", start_step=10)).steps == 10
    assert resolve_settings(spec, EnhanceOptions(method="sr3pdm")).steps == spec.steps.default
    assert resolve_settings(spec, EnhanceOptions(method="sr3pdm", start_step=50, steps=5)).steps == 5


def test_start_step_alone_keeps_the_vdm_grid_of_diffusioniqt():
    """DiffusionIQT's steps are the grid T that K lies on: K = 2 alone means K = 2 of the default 20."""
    from mrisr.pipeline import resolve_settings

    settings = resolve_settings(get_spec("diffusioniqt"), EnhanceOptions(method="diffusioniqt", start_step=2))
    assert (settings.steps, settings.start_step) == (20, 2)


def test_enhance_file_writes_the_interpolated_input_the_segmentation_sees(tmp_path, oblique_thick):
    """--write-interpolated is the input B-spline-resampled onto the output grid (mrisr.imaging.geometry.interpolated_input,
    as segment_enhancement does), so a B-spline enhancement differs from it only by float round-off."""
    from mrisr.imaging.geometry import resample

    source = write_volume(oblique_thick, tmp_path / "in.nii.gz")
    out, interpolated = tmp_path / "out.nii.gz", tmp_path / "interpolated.nii.gz"
    result = enhance_file(source, out, EnhanceOptions(method="bspline"), interpolated_path=interpolated)
    written, enhanced = read_volume(interpolated), read_volume(out)
    assert written.GetSize() == enhanced.GetSize()
    for get in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(written, get)(), getattr(enhanced, get)(), atol=1e-5)
    expected = resample(read_volume(source), Grid.of(result.image), "bspline")
    np.testing.assert_allclose(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(expected), atol=1e-4)
    linear = enhance_file(source, tmp_path / "linear.nii.gz", EnhanceOptions(method="linear")).image
    span = float(sitk.GetArrayFromImage(expected).max())
    assert np.abs(sitk.GetArrayFromImage(result.image) - sitk.GetArrayFromImage(written)).max() < 1e-3 * span
    assert np.abs(sitk.GetArrayFromImage(linear) - sitk.GetArrayFromImage(written)).max() > 1e-2 * span
    with pytest.raises(InputError, match="interpolated input path .* is the output path"):
        enhance_file(source, tmp_path / "again.nii.gz", EnhanceOptions(method="bspline"),
                     interpolated_path=tmp_path / "again.nii.gz")
    assert not (tmp_path / "again.nii.gz").exists()
