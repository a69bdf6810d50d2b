"""The shared helpers of the diffusion layer: the [0, 1] ↔ [−1, 1] map and mixed precision per device."""

import numpy as np
import pytest
import torch

from mrisr.device import autocast, autocast_dtype
from mrisr.diffusion.intensity import from_model_range, to_model_range


def test_model_range_maps_the_unit_interval_and_round_trips_numpy_and_torch():
    values = np.array([0.0, 0.25, 1.0, 1.2], np.float32)
    np.testing.assert_allclose(to_model_range(values), [-1.0, -0.5, 1.0, 1.4], rtol=0, atol=1e-6)
    assert to_model_range(values).dtype == np.float32 and from_model_range(to_model_range(values)).dtype == np.float32
    np.testing.assert_allclose(from_model_range(to_model_range(values)), values, atol=1e-7)
    tensor = torch.from_numpy(values)
    torch.testing.assert_close(to_model_range(tensor), torch.from_numpy(to_model_range(values)))
    torch.testing.assert_close(from_model_range(torch.tensor([-1.0, 0.0, 1.0])), torch.tensor([0.0, 0.5, 1.0]))


@pytest.mark.filterwarnings("ignore:CUDA is not available")
@pytest.mark.parametrize("device", ["cpu", "mps", "cuda", "cuda:1"])
def test_autocast_uses_the_device_type_of_any_device_string(device):
    with autocast(device, None):
        assert not torch.is_autocast_enabled("cpu")
    if device == "cpu":
        with autocast(device, torch.bfloat16):
            assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
            assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.bfloat16
    else:
        context = autocast(device, torch.float16)
        assert context.device == device.split(":")[0]  # never a hard-coded "cuda"
    assert autocast_dtype("cpu") is None and autocast_dtype("mps") is None
