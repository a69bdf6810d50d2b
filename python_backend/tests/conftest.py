"""Shared fixtures: small structured phantoms with realistic (oblique, anisotropic) geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk


def rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Rotation matrix about `axis` (Rodrigues)."""
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(degrees)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def phantom_array(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A head-like phantom (z, y, x): an ellipsoid 'brain' with inner blobs of different intensity."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    volume = np.where(zz**2 / 0.8 + yy**2 / 0.7 + xx**2 / 0.6 < 1, 100.0, 0.0)
    for _ in range(6):
        c = rng.uniform(-0.4, 0.4, 3)
        r = rng.uniform(0.1, 0.25)
        inside = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < r**2
        volume[inside] = rng.uniform(150, 250)
    return volume.astype(np.float32)


def make_image(array: np.ndarray, spacing=(1.0, 1.0, 1.0), direction=None, origin=(10.0, -20.0, 30.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    return image


@pytest.fixture
def oblique_thick() -> sitk.Image:
    """An oblique, anisotropic (0.9×0.9×5 mm) thick-slice phantom, 40×44×9 voxels (x, y, z)."""
    direction = rotation(np.array([1.0, 2.0, 0.5]), 25.0)
    return make_image(phantom_array((9, 44, 40)), spacing=(0.9, 0.9, 5.0), direction=direction)


@pytest.fixture
def phantom_image() -> sitk.Image:
    """An isotropic 1 mm phantom, 32×36×28 voxels (x, y, z)."""
    return make_image(phantom_array((28, 36, 32)))


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The networks in tests are tiny: on 2 cores shared with other jobs, two OpenMP threads ran small
    convolutions up to ~100x slower than one (measured), so the whole test session uses one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
