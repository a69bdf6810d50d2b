"""What the module says about itself: help and acknowledgement text, the research-use notice, the four
papers it implements and the data its shipped weights were trained on.

Kept here (not in the Qt module file) so that tests can check it against the backend's registry and
model cards; the module's `helpText` and `acknowledgementText` are `helpText()` and `acknowledgementText()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

# The extension's EXTENSION_HOMEPAGE (CMakeLists.txt; a test keeps the two equal).
README_URL = "https://github.com/MRISuperResolution/MRISuperResolution#readme"

NOTICE = ("For research use only. Not for diagnosis or treatment: the enhanced volume contains detail the "
          "method predicts, not detail the scanner measured; always read the original images.")

TRAINING_DATA = ("The shipped weights were trained only on synthetic data: low-field / thick-slice images "
                 "simulated from the MNI152 2009 template (ICBM 2009a nonlinear symmetric, distributed with "
                 "nilearn), with random deformations, contrasts, bias fields, slice profiles and noise; "
                 "Res-SRDiff was then fine-tuned on synthetic images drawn from real subjects' brain "
                 "label maps (the public SynthSR examples, Apache-2.0) with random contrasts and voxel sizes. "
                 "No patient scans were used for training (real scans only to evaluate). \"Adapt to this scan\" "
                 "fine-tunes a copy of the weights on your own scan at run time; nothing leaves this computer "
                 "unless you choose a server. Each model card (mrisr/weights/*.json) records its training "
                 "data and the measured quality.")


@dataclass(frozen=True)
class Paper:
    """One paper the backend implements, and the backend methods that implement it."""

    short: str
    title: str
    authors: str
    venue: str
    methods: tuple[str, ...]

    def citation(self) -> str:
        return f"{self.authors}. {self.title}. {self.venue}."


PAPERS = (
    Paper("DiffusionIQT", "A 3D Conditional Diffusion Model for Image Quality Transfer - An Application to Low-Field MRI",
          "S. Kim, H. F. J. Tregidgo, A. K. Eldaly, M. Figini, D. C. Alexander", "arXiv:2311.06631, 2023",
          ("diffusioniqt",)),
    Paper("PDM", "MRI Super-Resolution with Partial Diffusion Models",
          "K. Zhao, K. Pang, A. L. Y. Hung, H. Zheng, R. Yan, K. Sung", "IEEE Transactions on Medical Imaging, 2024",
          ("sr3pdm", "diffusioniqt")),
    Paper("Res-SRDiff", "MRI super-resolution reconstruction using efficient diffusion probabilistic model with "
          "residual shifting", "M. Safari, S. Wang, Z. Eidex, Q. Li, E. H. Middlebrooks, D. S. Yu, X. Yang",
          "preprint, 2025", ("ressrdiff",)),
    Paper("DiffMSR", "Rethinking Diffusion Model for Multi-Contrast MRI Super-Resolution",
          "G. Li, C. Rao, J. Mo, Z. Zhang, W. Xing, L. Zhao", "CVPR 2024", ("diffmsr", "diffmsr-noref")),
)

WHAT_IT_DOES = (
    "Makes a low-field or thick-slice MRI volume look like a high-resolution one. Choose the volume and a "
    "preset (Fast, Balanced or Best) and click Enhance: the result is a new volume with its own, finer voxel "
    "grid, shown beside the input (interpolated onto the same grid) and their difference, in linked views. "
    "Fast is plain interpolation; the other presets use diffusion models that predict fine detail, which can "
    "be wrong: the difference view shows where the result departs from the input, and learned runs report "
    "a self-check against interpolation. The work runs in a separate background process (on this computer "
    "or a server) and can be cancelled at any time.")


def paperFor(method: str) -> tuple[Paper, ...]:
    """The papers a backend method implements (none for interpolation)."""
    return tuple(paper for paper in PAPERS if method in paper.methods)


def helpText() -> str:
    """The module's help (Qt rich text): what it does, the notice, the papers' methods, the README."""
    return (f"<p>{escape(WHAT_IT_DOES)}</p>"
            f"<p><b>{escape(NOTICE)}</b></p>"
            "<p>Methods: interpolation baselines and " + ", ".join(escape(p.short) for p in PAPERS) +
            " (see Acknowledgment for the papers).</p>"
            f'<p>Documentation, measured quality and speed: <a href="{README_URL}">README</a>.</p>')


def acknowledgementText() -> str:
    """The module's acknowledgement (Qt rich text): the papers, the training data, the notice, what it uses."""
    papers = "".join(f"<li>{escape(p.short)}: {escape(p.citation())}</li>" for p in PAPERS)
    return (f"<p>This module implements the methods of four papers:</p><ul>{papers}</ul>"
            f"<p>{escape(TRAINING_DATA)}</p>"
            f"<p><b>{escape(NOTICE)}</b></p>"
            "<p>Uses PyTorch (through the PyTorch extension), SimpleITK and the MNI152 template shipped with "
            "nilearn.</p>")
