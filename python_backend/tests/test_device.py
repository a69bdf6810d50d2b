"""Device choice (CUDA, then MPS, then CPU), the MPS fallback switch and the GPU-memory check before a run.

No GPU exists on the test machine: torch's CUDA and MPS queries (`is_available`, `device_count`,
`mem_get_info`) are monkeypatched stand-ins, so these tests check the decisions, not the hardware.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

from mrisr import device as devices
from mrisr.errors import InputError
from mrisr.imaging.geometry import Grid
from mrisr.pipeline import EnhanceOptions, enhance
from mrisr.plan import device_memory_mib
from mrisr.registry import get_spec


def machine(monkeypatch, cuda: bool, mps: bool, free_gib: float = 80.0) -> None:
    """Stand-ins for what torch reports about this machine's GPUs."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: int(cuda))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(free_gib * 2**30), 80 * 2**30))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("cuda, mps, chosen", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, chosen):
    machine(monkeypatch, cuda, mps)
    assert devices.resolve_device("auto") == chosen


def test_asking_for_an_absent_mps_names_the_fix(monkeypatch):
    machine(monkeypatch, cuda=False, mps=False)
    with pytest.raises(InputError, match="MPS is not available here: use --device cpu or auto"):
        devices.resolve_device("mps")
    machine(monkeypatch, cuda=False, mps=True)
    assert devices.resolve_device("MPS") == "mps"


def test_mps_fallback_is_switched_on_for_macos_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv(devices.MPS_FALLBACK, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    devices.allow_mps_fallback()
    assert devices.MPS_FALLBACK not in os.environ
    monkeypatch.setattr(sys, "platform", "darwin")
    devices.allow_mps_fallback()
    assert os.environ[devices.MPS_FALLBACK] == "1"
    monkeypatch.setenv(devices.MPS_FALLBACK, "0")
    devices.allow_mps_fallback()
    assert os.environ[devices.MPS_FALLBACK] == "0"


def test_the_memory_check_refuses_in_one_line_with_the_need_the_free_amount_and_the_fix(monkeypatch):
    machine(monkeypatch, cuda=True, mps=False, free_gib=0.5)
    with pytest.raises(InputError) as refused:
        devices.check_free_memory("cuda:0", need_mib=3 * 1024)
    message = str(refused.value)
    assert "\n" not in message
    assert "needs about 3.0 GiB on cuda:0 but only 0.5 GiB is free" in message and "--device cpu" in message
    devices.check_free_memory("cuda:0", need_mib=400)  # fits
    devices.check_free_memory("cpu", need_mib=10**9)  # only CUDA is checked


def test_enhance_checks_gpu_memory_before_any_work(monkeypatch, oblique_thick):
    machine(monkeypatch, cuda=True, mps=False, free_gib=0.001)
    options = EnhanceOptions(method="diffusioniqt", device="cuda")
    grid = Grid.of(oblique_thick)
    need = device_memory_mib(get_spec("diffusioniqt"), {}, grid)
    assert need > 1.0  # weights and a batch of 3×3×3 blocks of 32³ patches
    with pytest.raises(InputError, match=r"GiB on cuda:0 but only 0\.0 GiB is free: use --device cpu"):
        enhance(oblique_thick, options)  # on a real CPU-only torch, any CUDA work would fail differently


def test_device_memory_grows_with_the_patch_and_the_grid_and_interpolation_needs_none():
    grid = Grid((200, 240, 200), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    small = Grid((100, 120, 100), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    iqt = get_spec("diffusioniqt")
    assert device_memory_mib(iqt, {"patch_size": 16}, grid) < device_memory_mib(iqt, {"patch_size": 32}, grid)
    assert device_memory_mib(get_spec("ressrdiff"), {}, small) < device_memory_mib(get_spec("ressrdiff"), {}, grid)
    assert device_memory_mib(get_spec("bspline"), {}, grid) == 0.0
