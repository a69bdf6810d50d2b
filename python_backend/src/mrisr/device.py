"""Compute-device selection (CUDA when present, CPU otherwise, a clear error for a bad request) and the one
mixed-precision helper. torch is imported only inside the functions (the CLI's listing commands stay light)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ContextManager

from mrisr.errors import InputError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str = "auto") -> str:
    """Turn "auto" | "cpu" | "cuda" | "cuda:N" into a concrete torch device string."""
    import torch

    name = (name or "auto").strip().lower()
    has_cuda = torch.cuda.is_available()
    if name == "auto":
        return "cuda" if has_cuda else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        if not has_cuda:
            raise InputError(f"device {name!r} requested but CUDA is not available here: use --device cpu or auto")
        index = int(name.split(":", 1)[1]) if ":" in name and name.split(":", 1)[1].isdigit() else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        return f"cuda:{index}"
    raise InputError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")


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
