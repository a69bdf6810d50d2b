"""Through-plane montage of enhanced volumes side by side (coronal and sagittal centre slices), for the README.

usage: python montage.py OUT.png LABEL=VOLUME [LABEL=VOLUME ...]   (volumes on one grid, any format mrisr reads)
"""

from __future__ import annotations

import sys

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw

from mrisr.io.volumes import read_volume


def _slices(image: sitk.Image) -> list[np.ndarray]:
    """Coronal and sagittal centre slices, resampled to square pixels, superior up."""
    array = sitk.GetArrayFromImage(image)  # (z, y, x)
    sx, sy, sz = image.GetSpacing()
    out = []
    for plane, spacing in ((array[:, array.shape[1] // 2, :], (sz, sx)), (array[:, :, array.shape[2] // 2], (sz, sy))):
        height = int(round(plane.shape[0] * spacing[0] / spacing[1]))
        picture = Image.fromarray(plane.astype(np.float32)).resize((plane.shape[1], height), Image.BILINEAR)
        out.append(np.asarray(picture)[::-1])
    return out


def montage(out_path: str, volumes: list[tuple[str, sitk.Image]]) -> None:
    rows = [_slices(image) for _, image in volumes]
    low, high = np.percentile(np.concatenate([r[0].ravel() for r in rows]), [1, 99.5])
    tiles = [[np.clip((s - low) / (high - low), 0, 1) for s in row] for row in rows]
    width = sum(t.shape[1] for t in tiles[0]) + 10
    height = max(t.shape[0] for t in tiles[0]) + 18
    canvas = Image.new("L", (width, height * len(tiles)), 0)
    draw = ImageDraw.Draw(canvas)
    for r, ((label, _), row) in enumerate(zip(volumes, tiles)):
        x = 0
        for tile in row:
            canvas.paste(Image.fromarray((tile * 255).astype(np.uint8)), (x, r * height + 18))
            x += tile.shape[1] + 10
        draw.text((4, r * height + 3), label, fill=255)
    canvas.save(out_path)


if __name__ == "__main__":
    montage(sys.argv[1], [(arg.split("=", 1)[0], read_volume(arg.split("=", 1)[1])) for arg in sys.argv[2:]])
