"""Brain tissue segmentation of whole volumes: background / CSF / GM / WM label maps.

Two segmenters: "unet" (default), the shipped 2D U-Net (card `tissueseg_cpu`) applied to every slice
along the three axes with the class probabilities averaged; and "gmm", a classical fallback (EM on the
intensities inside the head mask, see `tissue_gmm`). Both take the image on its own grid and return a
UInt8 label map with the same geometry.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from mrisr.errors import InputError
from mrisr.imaging.foreground import foreground_mask
from mrisr.imaging.normalization import robust_scale
from mrisr.progress import CancelToken, ProgressCallback, no_progress
from mrisr.inference.slicewise import SlicePlan, enhance_slicewise
from mrisr.io.volumes import validate_volume

log = logging.getLogger(__name__)
SEGMENTERS = ("unet", "gmm")
CARD = "tissueseg_cpu"


def load_segmenter(device: str = "cpu"):
    """The shipped tissue U-Net (SHA256-verified) on `device`, in eval mode."""
    from mrisr.methods.learned import load_network
    from mrisr.io.model_store import load_card
    from mrisr.networks.tissue_unet2d import TissueUNet2d, TissueUNetConfig

    card = load_card(CARD)
    return load_network(card, lambda config: TissueUNet2d(TissueUNetConfig.from_dict(config)), device)


def tissue_probabilities(volume: np.ndarray, network, axes: Sequence[int] = (0, 1, 2), batch_size: int = 16,
                         progress: ProgressCallback = no_progress, cancel: CancelToken | None = None) -> np.ndarray:
    """(4, z, y, x) class probabilities of a (z, y, x) volume: the network on every foreground slice
    along each of `axes` (`enhance_slicewise`, zero-padded), softmax averaged over the axes; background
    outside the head mask and on slices without foreground."""
    import torch

    mask = foreground_mask(volume)
    normalised = robust_scale(volume, mask).apply(volume)
    device = next(network.parameters()).device
    background = np.zeros((network.config.classes,) + volume.shape, np.float32)
    background[0] = 1.0

    def softmax(stack: np.ndarray, reference: None, seeds: Sequence[int]) -> np.ndarray:
        with torch.inference_mode():
            logits = network(torch.from_numpy(stack)[:, None].to(device))
        return logits.float().softmax(1).cpu().numpy()

    plan = SlicePlan(tuple(axes), batch_size, network.config.pad_multiple, pad_mode="constant")
    total = enhance_slicewise(softmax, normalised, plan, mask, progress=progress, cancel=cancel,
                              background=background, stage="segment")
    total[0][~mask] = 1.0
    total[1:, ~mask] = 0.0
    return total


def segment_array(volume: np.ndarray, segmenter: str = "unet", device: str = "cpu", axes: Sequence[int] = (0, 1, 2),
                  progress: ProgressCallback = no_progress, cancel: CancelToken | None = None) -> np.ndarray:
    """UInt8 (z, y, x) labels (0 background, 1 CSF, 2 GM, 3 WM) of a (z, y, x) volume."""
    if segmenter not in SEGMENTERS:
        raise InputError(f"segmenter {segmenter!r} is unknown: use one of {', '.join(SEGMENTERS)}")
    volume = np.asarray(volume, dtype=np.float32)
    if segmenter == "gmm":
        from mrisr.segmentation.gmm import gmm_labels

        return gmm_labels(volume)
    probabilities = tissue_probabilities(volume, load_segmenter(device), axes, progress=progress, cancel=cancel)
    return np.argmax(probabilities, axis=0).astype(np.uint8)


def segment_image(image: sitk.Image, segmenter: str = "unet", device: str = "cpu",
                  progress: ProgressCallback = no_progress, cancel: CancelToken | None = None) -> sitk.Image:
    """Label map (UInt8, same grid as `image`) of a T1-weighted brain volume."""
    image = validate_volume(image)
    labels = segment_array(sitk.GetArrayFromImage(image), segmenter, device, progress=progress, cancel=cancel)
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(image)
    return out
