"""Sample data built offline from the MNI152 2009 template that ships inside the nilearn package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import SimpleITK as sitk

from mrisr.errors import MRISRError

MNI_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def mni_path(kind: str = "t1") -> Path:
    """Path of the packaged MNI152 T1 template or GM/WM probability map (1 mm, 197×233×189)."""
    try:
        folder = resources.files("nilearn.datasets").joinpath("data")
    except ModuleNotFoundError:
        raise MRISRError('the MNI152 sample data needs the "eval" extra: pip install "mrisr[eval]"') from None
    path = Path(str(folder.joinpath(MNI_FILES[kind])))
    if not path.exists():
        raise MRISRError(f"nilearn is installed but {path.name} is missing: reinstall nilearn")
    return path


def mni_image(kind: str = "t1", pad_to_multiple: int = 1) -> sitk.Image:
    """The MNI152 template (or tissue map) as a float32 image; tissue maps are scaled to [0, 1].

    With `pad_to_multiple` = m, zero background is added at the high end of each axis so every size
    is a multiple of m: then ×2/×4/×5/×8 degradations (m = 40) tile the field of view exactly and the
    enhanced output lands on the template's own grid.
    """
    image = sitk.Cast(sitk.ReadImage(str(mni_path(kind))), sitk.sitkFloat32)
    if kind != "t1":
        image = sitk.Cast(image / 255.0, sitk.sitkFloat32)
    extra = [(-n) % pad_to_multiple for n in image.GetSize()]
    return sitk.ConstantPad(image, [0, 0, 0], extra, 0.0) if any(extra) else image
