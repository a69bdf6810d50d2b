"""Reading and writing 3D MRI volumes (NIfTI, NRRD, MHA/MHD, DICOM series) with exact geometry."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mrisr.io.atomic import atomic_output
from mrisr.errors import InputError

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


SLICE_THICKNESS_KEY = "0018|0050"  # DICOM SliceThickness, kept on images read from a series


def _series_files(folder: Path) -> tuple[str, ...]:
    """The files of the largest DICOM series in `folder` (empty for a file or a folder without one)."""
    if not folder.is_dir():
        return ()
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    files_per_series = {sid: reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series}
    if len(series) > 1:
        log.warning("%s holds %d DICOM series; reading the largest", folder, len(series))
    return max(files_per_series.values(), key=len) if series else ()


def _read_dicom_series(folder: Path, files: tuple[str, ...]) -> sitk.Image:
    if not files:
        raise InputError(f"{folder} is a folder without a DICOM series: pass a volume file or a DICOM series folder")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def _slice_thickness(file_name: str) -> float | None:
    """DICOM SliceThickness (0018,0050) of one file in mm, when present and positive."""
    header = sitk.ImageFileReader()
    header.SetFileName(file_name)
    header.ReadImageInformation()
    if not header.HasMetaDataKey(SLICE_THICKNESS_KEY):
        return None
    try:
        value = float(header.GetMetaData(SLICE_THICKNESS_KEY).strip())
    except ValueError:
        return None
    return value if value > 0 else None


def slice_thickness(image: sitk.Image) -> float | None:
    """The acquired slice thickness in mm that the reader found (DICOM SliceThickness), else None: the slice
    profile is then taken to be as wide as the slice separation."""
    return float(image.GetMetaData(SLICE_THICKNESS_KEY)) if image.HasMetaDataKey(SLICE_THICKNESS_KEY) else None


def _check_nifti_payload(path: Path) -> None:
    """ITK zero-fills a truncated NIfTI and turns NaN into 0 without a word; nibabel reads it strictly."""
    import nibabel

    try:
        data = np.asanyarray(nibabel.load(str(path)).dataobj)
    except Exception as exc:  # nibabel raises OSError, EOFError, zlib errors or HeaderDataError
        raise InputError(
            f"cannot read {path} as a volume ({str(exc).splitlines()[0][:120]}): the file is corrupt or truncated"
        ) from None
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise InputError(f"{path} has {bad} non-finite voxels (NaN/Inf): fix or mask them before enhancing")


def read_volume(path: str | os.PathLike) -> sitk.Image:
    """Read a scalar 3D volume as float32, keeping origin, spacing and direction.

    Raises InputError with a one-line reason for missing, unreadable, 2D, 4D, vector or non-finite input.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input {path} does not exist: check the path")
    try:
        files = _series_files(path)
        image = _read_dicom_series(path, files) if path.is_dir() else sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reader error"
        raise InputError(
            f"cannot read {path} as a volume ({reason[:160]}): the file is corrupt, truncated or not "
            f"NIfTI/NRRD/MHA/DICOM"
        ) from None
    if _suffix(path) in (".nii", ".nii.gz"):
        _check_nifti_payload(path)
    volume = validate_volume(image, str(path))
    thickness = _slice_thickness(files[0]) if files else None
    if thickness is not None:
        volume.SetMetaData(SLICE_THICKNESS_KEY, f"{thickness:g}")
    return volume


def validate_volume(image: sitk.Image, name: str = "input") -> sitk.Image:
    """Check an image is a finite scalar 3D volume and return it as float32."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{name} has {image.GetNumberOfComponentsPerPixel()} components per voxel (vector/RGB image): "
            f"pass a single scalar MRI volume"
        )
    dim = image.GetDimension()
    size = image.GetSize()
    if dim == 4 and size[3] == 1:
        image = image[:, :, :, 0]
    elif dim == 4:
        raise InputError(f"{name} is 4D ({size[3]} volumes): extract one 3D volume first")
    elif dim != 3:
        raise InputError(f"{name} is {dim}D: a 3D volume is needed")
    if min(image.GetSize()) < 2:
        raise InputError(f"{name} has size {image.GetSize()}: a single slice is a 2D image, a 3D volume is needed")
    image = sitk.Cast(image, sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise InputError(f"{name} has {bad} non-finite voxels (NaN/Inf): fix or mask them before enhancing")
    return image


def check_output_path(path: str | os.PathLike, protect: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Fail early, before any work, if `path` cannot be written or is one of the protected inputs."""
    path = Path(path)
    if _suffix(path) not in VOLUME_SUFFIXES:
        raise InputError(f"output {path} has an unknown extension: use one of {', '.join(VOLUME_SUFFIXES)}")
    for other in protect:
        if Path(other).exists() and path.exists() and os.path.samefile(path, other):
            raise InputError(f"output {path} is an input file: choose another output path")
    if path.is_dir():
        raise InputError(f"output {path} is a folder: give a file name such as enhanced.nii.gz")
    if not path.parent.is_dir():
        raise InputError(f"output folder {path.parent} does not exist: create it first")
    return path


def write_volume(image: sitk.Image, path: str | os.PathLike, *, protect: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Write atomically (temporary file in the same folder, then rename); never overwrite a protected file."""
    path = check_output_path(path, protect)
    suffix = _suffix(path)
    with atomic_output(path, suffix) as tmp_name:
        sitk.WriteImage(image, tmp_name, useCompression=suffix in (".nii.gz", ".nrrd", ".mha", ".seg.nrrd"))
    return path
