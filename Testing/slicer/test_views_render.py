"""Visual check of the comparison layout: the four slice views are rendered by Slicer's slice logics
(the same blended image the OpenGL views show, no OpenGL needed) and checked pixel by pixel.

The test writes its picture to a temporary folder and artifacts/ (kept by CI, ignored by git), never into
tracked files; `python Testing/slicer/render_slicer_views.py` regenerates docs/slicer_views.png for the README.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
Image = pytest.importorskip("PIL.Image")
ImageDraw = pytest.importorskip("PIL.ImageDraw")

from MRISuperResolutionLib import layout as lay  # noqa: E402
from mrisr_slicer_testing import ARTIFACTS  # noqa: E402
from render_slicer_views import mosaic  # noqa: E402



@pytest.fixture(scope="module")
def rendered(enhanced_world):
    views = enhanced_world.views
    enhanced_world.extra["logic"].comparisonLayout().fit()
    return {view.tag: views.render(view.tag) for view in lay.VIEWS}


def inside_volume(image: np.ndarray) -> np.ndarray:
    """Pixels of a grey view that show the volume (outside it Slicer draws black)."""
    return image.sum(axis=2) > 0


def test_views_show_the_same_slice_at_the_same_zoom(enhanced_world, rendered):
    matrices = []
    for view in lay.VIEWS:
        sliceNode = enhanced_world.views.sliceLogic(view.tag).GetSliceNode()
        matrices.append(slicer.util.arrayFromVTKMatrix(sliceNode.GetXYToRAS()))
    for matrix in matrices[1:]:
        np.testing.assert_allclose(matrix, matrices[0], atol=1e-6)
    assert {image.shape for image in rendered.values()} == {(256, 256, 3)}


def test_grey_views_are_not_blank_and_differ(rendered):
    for tag in (lay.INPUT, lay.ENHANCED, lay.OVERLAY):
        image = rendered[tag].astype(int)
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all(), tag
        assert inside_volume(image).mean() > 0.3 and image[inside_volume(image)].std() > 20, tag
    change = np.abs(rendered[lay.ENHANCED].astype(int) - rendered[lay.INPUT].astype(int))
    assert change.mean() > 1.0  # linear along z is not the B-spline interpolation shown as input


def test_difference_view_is_blue_white_red(rendered):
    image = rendered[lay.DIFFERENCE].astype(int)
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]
    reddish = (red > blue + 60) & (red > green + 30)
    bluish = (blue > red + 60) & (blue > green)
    whitish = (image.min(axis=2) > 200) & (image.max(axis=2) - image.min(axis=2) < 30)
    assert reddish.mean() > 0.005 and bluish.mean() > 0.005  # both signs of change are visible (> 300 pixels)
    assert whitish.mean() > 0.2  # most of the slice changed little


def test_overlay_view_blends_enhanced_and_input(rendered):
    inside = inside_volume(rendered[lay.ENHANCED]) & inside_volume(rendered[lay.INPUT])
    blend = (1 - lay.OVERLAY_OPACITY) * rendered[lay.ENHANCED].astype(float) + lay.OVERLAY_OPACITY * rendered[lay.INPUT]
    error = np.abs(rendered[lay.OVERLAY].astype(float) - blend)[inside]
    assert np.percentile(error, 99) <= 2.0


def test_write_picture_for_ci_into_untracked_files_only(rendered, tmp_path):
    picture = mosaic(rendered, "linear")
    for folder in (tmp_path, ARTIFACTS):
        folder.mkdir(exist_ok=True)
        picture.save(folder / "slicer_views.png")
    assert picture.size == (516, 516) and (tmp_path / "slicer_views.png").stat().st_size > 10_000
