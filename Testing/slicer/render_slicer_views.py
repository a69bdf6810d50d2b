"""Regenerate docs/slicer_views.png (the README's picture of the comparison layout) on slicer-core.

    python Testing/slicer/render_slicer_views.py [--method linear] [--steps N] [--out docs/slicer_views.png]

The same rendering as Testing/slicer/test_views_render.py (Slicer's own slice logics, no OpenGL), run on
purpose: tests never write into tracked files.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
for folder in (str(HERE.parents[1] / "MRISuperResolution"), str(HERE)):
    if folder not in sys.path:
        sys.path.insert(0, folder)

def mosaic(rendered: dict, method: str):
    """The four rendered views, (H, W, 3) uint8 each by view tag, as one titled 2 × 2 Pillow image."""
    from PIL import Image, ImageDraw
    from MRISuperResolutionLib import layout

    titles = {layout.INPUT: "Input (B-spline)", layout.ENHANCED: f"Enhanced ({method})",
              layout.DIFFERENCE: "Difference", layout.OVERLAY: "Overlay"}
    picture = Image.new("RGB", (516, 516), (90, 90, 90))
    for index, view in enumerate(layout.VIEWS):
        tile = Image.fromarray(rendered[view.tag])
        draw = ImageDraw.Draw(tile)
        draw.rectangle((0, 0, 256, 16), fill=(40, 40, 40))
        draw.text((4, 2), titles[view.tag], fill=(255, 255, 255))
        picture.paste(tile, ((index % 2) * 260, (index // 2) * 260))
    return picture


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="linear", help="method of the enhanced view (default linear)")
    parser.add_argument("--steps", type=int, help="steps of a learned method (default: the method's)")
    parser.add_argument("--out", type=Path, default=HERE.parents[1] / "docs" / "slicer_views.png")
    args = parser.parse_args(argv)
    import mrisr_slicer_testing as harness
    from MRISuperResolutionLib import layout
    from MRISuperResolutionLib.dependencies import loadCatalog

    with tempfile.TemporaryDirectory() as scratch:
        volume = harness.writeThickVolume(Path(scratch) / "thick.nii.gz")
        world = harness.makeWorld(Path(scratch) / "slicer-temp")
        logic = harness.makeLogic(world, loadCatalog(sys.executable))
        outputNode = logic.enhance(world.loadVolume(volume, "T1 thick"), method=args.method, steps=args.steps)
        logic.showComparison(outputNode).fit()
        rendered = {view.tag: world.views.render(view.tag) for view in layout.VIEWS}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        label = args.method + (f", {args.steps} step{'s' if args.steps != 1 else ''}" if args.steps else "")
        mosaic(rendered, label).save(args.out)
        world.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
