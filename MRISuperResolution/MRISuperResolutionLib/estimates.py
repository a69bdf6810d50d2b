"""Expected run time of a method on the current volume, on CPU and on a CUDA GPU, where it is known.

The rates are the backend's: a method's registry entry carries what was measured for it in its config,
`"seconds_per_megavoxel": {"cpu": 5.9, "cuda": …}` (output voxels, at the method's default steps), and the
module reads them from `mrisr methods --json` (the local backend's or the server's).
"""

from __future__ import annotations

from typing import Optional

from .parameters import MethodInfo

STARTUP_SECONDS = 2.5  # interpreter start and torch import, 2-core CPU
DEVICE_NAMES = {"cpu": "CPU", "cuda": "GPU"}


def secondsPerMegavoxel(method: MethodInfo) -> dict[str, float]:
    """Rates by device ("cpu", "cuda") from the method's registry entry (empty when none was measured)."""
    rates = method.config.get("seconds_per_megavoxel") or {}
    return {device: float(rate) for device, rate in rates.items() if device in DEVICE_NAMES}


def estimateSeconds(method: MethodInfo, outputVoxels: int, device: str = "cpu", steps: Optional[int] = None,
                    samples: int = 1, adaptSeconds: float = 0.0) -> Optional[float]:
    """Expected wall time in seconds, or None when the method has no rate for that device.

    Diffusion methods scale linearly with the number of sampling steps (the rate is for the default)
    and with the number of samples averaged; adaptation to the scan adds its time budget.
    """
    rate = secondsPerMegavoxel(method).get("cuda" if device.startswith("cuda") else device)
    if rate is None:
        return None
    scale = 1.0
    if steps is not None and method.steps is not None and method.steps.default > 0:
        scale = steps / method.steps.default
    return STARTUP_SECONDS + adaptSeconds + rate * scale * max(1, samples) * outputVoxels / 1e6


def formatDuration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def describeEstimate(method: MethodInfo, outputVoxels: int, steps: Optional[int] = None, samples: int = 1,
                     adaptSeconds: float = 0.0, serverDevice: Optional[str] = None) -> str:
    """One line for the panel, e.g. "≈ 4 s on CPU" or "≈ 6 min on CPU, ≈ 20 s on GPU"; with a server,
    only for the device the server runs on ("cpu" or "cuda"), e.g. "≈ 20 s on the server's GPU"."""
    parts, owner = [], "the server's " if serverDevice else ""
    for device, name in DEVICE_NAMES.items():
        if serverDevice is not None and not serverDevice.startswith(device):
            continue
        seconds = estimateSeconds(method, outputVoxels, device, steps, samples, adaptSeconds)
        if seconds is not None:
            parts.append(f"≈ {formatDuration(seconds)} on {owner}{name}")
    megavoxels = f"{outputVoxels / 1e6:.1f} million output voxels"
    adaptation = f", {formatDuration(adaptSeconds)} of it adapting to the scan" if adaptSeconds and parts else ""
    if not parts:
        adaptation = f"; adapting to the scan takes {formatDuration(adaptSeconds)}" if adaptSeconds else ""
        where = f" on {owner}{DEVICE_NAMES.get(serverDevice[:4], serverDevice)}" if serverDevice else ""
        return f"{megavoxels}; no time measured for {method.name}{where} yet{adaptation}"
    return f"{', '.join(parts)} ({megavoxels}{adaptation})"
