"""Compute-device selection (CUDA, then Apple MPS, then CPU; a clear error for a bad request), the device
memory check before a run and the one mixed-precision helper. torch is imported only inside the functions
(the CLI's listing commands stay light).

Importing this module on macOS sets PYTORCH_ENABLE_MPS_FALLBACK=1 (unless set already), so operations MPS
lacks run on the CPU instead of failing: PyTorch reads it when torch is imported, so the CLI and the
pipeline import this module before torch.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any, ContextManager

from mrisr.errors import InputError

if TYPE_CHECKING:
    import torch

MPS_FALLBACK = "PYTORCH_ENABLE_MPS_FALLBACK"


def allow_mps_fallback() -> None:
    """Let operations MPS does not implement fall back to the CPU, where MPS may be used (macOS)."""
    if sys.platform == "darwin":
        os.environ.setdefault(MPS_FALLBACK, "1")


allow_mps_fallback()


def _has_mps() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def resolve_device(name: str = "auto") -> str:
    """Turn "auto" | "cpu" | "cuda" | "cuda:N" | "mps" into a concrete torch device string; auto prefers
    CUDA, then MPS, then the CPU."""
    import torch

    name = (name or "auto").strip().lower()
    has_cuda = torch.cuda.is_available()
    if name == "auto":
        return "cuda" if has_cuda else "mps" if _has_mps() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "mps":
        if not _has_mps():
            raise InputError("device 'mps' requested but Apple MPS is not available here: use --device cpu or auto")
        return "mps"
    if name == "cuda" or name.startswith("cuda:"):
        if not has_cuda:
            raise InputError(f"device {name!r} requested but CUDA is not available here: use --device cpu or auto")
        index = int(name.split(":", 1)[1]) if ":" in name and name.split(":", 1)[1].isdigit() else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        return f"cuda:{index}"
    raise InputError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")


def check_free_memory(device: str, need_mib: float) -> None:
    """Refuse a CUDA run whose estimated need (MiB) exceeds the device's free memory, before any work."""
    if not device.startswith("cuda"):
        return
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    if free < need_mib * 2**20:
        raise InputError(f"this run needs about {need_mib / 1024:.1f} GiB on {device} but only "
                         f"{free / 2**30:.1f} GiB is free: use --device cpu, a smaller --batch-size or "
                         f"--patch-size, or enhance a smaller region")


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """Half precision on CUDA (bf16 where supported), None (full precision) elsewhere."""
    import torch

    if torch.device(device).type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: str | torch.device, dtype: torch.dtype | None) -> ContextManager[Any]:
    """`torch.autocast` to `dtype` on the device type of `device` ("cpu", "cuda:1", "mps", …); a no-op
    context when `dtype` is None."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
