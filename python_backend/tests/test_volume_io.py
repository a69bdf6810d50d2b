import gzip
import os

import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.errors import InputError
from mrisr.io.volumes import read_volume, slice_thickness, write_volume


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_round_trip_keeps_geometry_and_values(tmp_path, oblique_thick, suffix):
    path = write_volume(oblique_thick, tmp_path / f"vol{suffix}")
    back = read_volume(path)
    np.testing.assert_allclose(back.GetSpacing(), oblique_thick.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(back.GetOrigin(), oblique_thick.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), oblique_thick.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(oblique_thick))
    assert back.GetPixelID() == sitk.sitkFloat32


def test_dicom_series_folder_is_read(tmp_path, phantom_image):
    image = sitk.Cast(sitk.RescaleIntensity(phantom_image, 0, 1000), sitk.sitkInt16)
    image.SetSpacing((0.8, 0.8, 2.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_k = image[:, :, k]
        for key, value in {
            "0010|0010": "Phantom", "0020|000d": "1.2.3", "0020|000e": "1.2.3.4", "0008|0060": "MR",
            "0020|0032": "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))),
            "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0013": str(k), "0028|0030": "0.8\\0.8",
            "0018|0050": "2.5",
        }.items():
            slice_k.SetMetaData(key, value)
        writer.SetFileName(str(tmp_path / f"{k:03d}.dcm"))
        writer.Execute(slice_k)
    back = read_volume(tmp_path)
    assert back.GetSize() == image.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), (0.8, 0.8, 2.0), atol=1e-4)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert slice_thickness(back) == 2.5  # thicker than the 2 mm spacing: the scan's slices overlap
    assert slice_thickness(image) is None


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_volume(tmp_path / "nope.nii.gz")


def test_truncated_nifti(tmp_path, phantom_image):
    path = write_volume(phantom_image, tmp_path / "ok.nii")
    data = path.read_bytes()
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(data[: len(data) // 3]))
    with pytest.raises(InputError, match="truncated"):
        read_volume(bad)


def test_not_an_image(tmp_path):
    bad = tmp_path / "notes.nii.gz"
    bad.write_text("hello")
    with pytest.raises(InputError, match="cannot read"):
        read_volume(bad)


def test_2d_image_is_refused(tmp_path):
    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.Image(20, 20, sitk.sitkFloat32), str(path))
    with pytest.raises(InputError, match="2D"):
        read_volume(path)


def test_single_slice_3d_is_refused(tmp_path):
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.Image(20, 20, 1, sitk.sitkFloat32), str(path))
    with pytest.raises(InputError, match="single slice"):
        read_volume(path)


def test_4d_and_vector_images_are_refused(tmp_path):
    four = tmp_path / "four.nii.gz"
    sitk.WriteImage(sitk.Image([8, 8, 8, 3], sitk.sitkFloat32), str(four))
    with pytest.raises(InputError, match="4D"):
        read_volume(four)
    vector = tmp_path / "vector.nrrd"
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkVectorFloat32, 3), str(vector))
    with pytest.raises(InputError, match="components"):
        read_volume(vector)


def test_non_finite_voxels_are_refused(tmp_path):
    array = np.ones((8, 8, 8), np.float32)
    array[1, 2, 3] = np.nan
    path = tmp_path / "nan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(InputError, match="1 non-finite"):
        read_volume(path)


def test_write_refuses_input_and_leaves_no_temp_files(tmp_path, phantom_image):
    path = write_volume(phantom_image, tmp_path / "in.nii.gz")
    before = path.read_bytes()
    with pytest.raises(InputError, match="input file"):
        write_volume(phantom_image * 2, path, protect=(path,))
    assert path.read_bytes() == before
    with pytest.raises(InputError, match="extension"):
        write_volume(phantom_image, tmp_path / "out.png")
    assert sorted(os.listdir(tmp_path)) == ["in.nii.gz"]
