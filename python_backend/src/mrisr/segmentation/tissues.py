"""The brain tissue classes the segmenter labels: values, names, display colours and standard codes,
and the reference labelling of the MNI152 template from its own probability maps.

Codes are SNOMED CT concepts of DICOM CID 7153 (CNS segmentation types), in Slicer's terminology
string layout, so Slicer shows standard terms for the segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tissue:
    """One label: its voxel value in a label map, name, RGB colour in [0, 1] and SNOMED CT type."""

    value: int
    name: str
    colour: tuple[float, float, float]
    code: str
    meaning: str
    category: tuple[str, str] = ("123037004", "Anatomical Structure")

    def terminology(self) -> str:
        """Slicer's segment terminology entry (category and type from the general anatomy context)."""
        category = f"SCT^{self.category[0]}^{self.category[1]}"
        return (f"Segmentation category and type - 3D Slicer General Anatomy list~{category}~"
                f"SCT^{self.code}^{self.meaning}~^^~Anatomic codes - DICOM master list~^^~^^")


TISSUES: tuple[Tissue, ...] = (
    Tissue(1, "Cerebrospinal fluid", (0.33, 0.74, 1.0), "65216001", "Cerebrospinal fluid",
           ("91720002", "Body Substance")),
    Tissue(2, "Grey matter", (0.80, 0.24, 0.31), "389081007", "Gray matter"),
    Tissue(3, "White matter", (0.96, 0.90, 0.35), "389080008", "White matter"),
)
BACKGROUND = 0
CLASS_NAMES = ("background",) + tuple(t.name for t in TISSUES)


def labels_from_probabilities(csf: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """Hard labels (uint8, 0 = background) from tissue probability maps: the most probable of
    background (1 − CSF − GM − WM), CSF, GM and WM in every voxel."""
    background = np.clip(1.0 - csf - gm - wm, 0.0, 1.0)
    return np.argmax(np.stack([background, csf, gm, wm]), axis=0).astype(np.uint8)


def template_labels() -> np.ndarray:
    """Reference labels of the MNI152 template (its probability maps thresholded by argmax), on the
    grid of `mrisr.simulation.template.mni_image(kind, pad_to_multiple=40)`."""
    from mrisr.simulation.synthetic import template_maps

    maps = template_maps()
    return labels_from_probabilities(maps["csf"], maps["gm"], maps["wm"])
