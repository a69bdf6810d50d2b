"""Foreground (head) masks so inference can skip empty background patches and slices."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage


def foreground_mask(volume: np.ndarray, dilation: int = 2) -> np.ndarray:
    """Boolean (z, y, x) mask of the object: Otsu threshold on a lightly smoothed volume, holes filled,
    dilated by `dilation` voxels so edges are kept. An all-constant volume gives an empty mask."""
    if float(volume.max()) <= float(volume.min()):
        return np.zeros(volume.shape, dtype=bool)
    image = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(volume.astype(np.float32)), 1.0)
    mask = sitk.GetArrayFromImage(sitk.OtsuThreshold(image, 0, 1)).astype(bool)
    mask = ndimage.binary_fill_holes(mask)
    if dilation > 0:
        mask = ndimage.binary_dilation(mask, iterations=dilation)
    return mask
