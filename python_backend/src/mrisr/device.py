"""Compute-device selection: CUDA when present, CPU otherwise, and a clear error for a bad request."""

from __future__ import annotations

from mrisr.errors import InputError


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
