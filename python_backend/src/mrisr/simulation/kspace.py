"""k-space helpers for methods whose LR input is a truncated-k-space acquisition (DiffMSR, PDM).

Conventions match `mrisr.simulation.degradation`'s k-space truncation: along a truncated axis an acquisition of
n_lr samples covering the same extent as n_hr output samples holds the integer frequencies
−⌊n_lr/2⌋ … ⌈n_lr/2⌉ − 1 of the HR image, with forward-normalised DFTs (so no n_hr/n_lr rescaling is
needed: the mean intensity is the same on both grids) and a linear phase for the half-voxel shift
(n_hr/n_lr − 1)/2 between the first LR and HR voxel centres.

For real-valued (magnitude) images the LR's Nyquist bin of an even n_lr < n_hr is not a measured
HR coefficient (taking the real part folds ±n_lr/2 together), so it is left out of the measured set.
All functions take torch tensors (any device, any leading dimensions); complex input is supported.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from mrisr.errors import InputError


def _band(hr_size: int, lr_size_: int, real: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(HR bin indices, LR bin indices) of the measured frequencies along one axis."""
    if not 1 <= lr_size_ <= hr_size:
        raise InputError(f"LR size {lr_size_} is invalid for an output of {hr_size} samples: must be 1..{hr_size}")
    freqs = torch.fft.fftfreq(lr_size_, d=1.0 / lr_size_, device=device).round().long()
    lr_index = torch.arange(lr_size_, device=device)
    if real and lr_size_ < hr_size and lr_size_ % 2 == 0:
        keep = freqs != -(lr_size_ // 2)
        freqs, lr_index = freqs[keep], lr_index[keep]
    return freqs % hr_size, lr_index


def _shift_phase(hr_size: int, lr_size_: int, hr_index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """exp(−2πi f s / n_hr) for the HR bins `hr_index`: undoes the degradation's half-voxel shift s."""
    shift = 0.5 * (hr_size / lr_size_ - 1.0)
    freqs = torch.where(hr_index > hr_size // 2, hr_index - hr_size, hr_index).to(torch.float64)
    return torch.exp(-2j * math.pi * freqs * shift / hr_size).to(dtype)


def _check_dims(estimate: torch.Tensor, lr: torch.Tensor, dims: Sequence[int]) -> list[int]:
    if estimate.ndim != lr.ndim:
        raise InputError(f"estimate has {estimate.ndim} dimensions but the LR has {lr.ndim}: they must match")
    dims = [d % estimate.ndim for d in dims]
    for d in range(estimate.ndim):
        if d not in dims and estimate.shape[d] != lr.shape[d]:
            raise InputError(f"estimate and LR differ along dimension {d} ({estimate.shape[d]} vs {lr.shape[d]}), "
                             f"which is not a k-space dimension {tuple(dims)}")
    return dims


def measured_mask(hr_shape: Sequence[int], lr_shape: Sequence[int], real: bool = True,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean mask (hr_shape) of the HR k-space bins (unshifted FFT order) an LR acquisition measured."""
    mask = torch.ones((), dtype=torch.bool, device=device)
    for axis, (n_hr, n_lr) in enumerate(zip(hr_shape, lr_shape)):
        line = torch.zeros(n_hr, dtype=torch.bool, device=device)
        line[_band(n_hr, n_lr, real, torch.device(device))[0]] = True
        mask = mask.unsqueeze(-1) & line.reshape(*([1] * axis), n_hr)
    return mask


def embed_lr_kspace(lr: torch.Tensor, hr_shape: Sequence[int], dims: Sequence[int] = (-2, -1)) -> torch.Tensor:
    """The LR's forward-normalised spectrum placed at its HR frequencies (zeros elsewhere).

    lr (..., h, w) → complex (..., H, W) for `hr_shape` = (H, W) along `dims`.
    """
    real = not lr.is_complex()
    spectrum = torch.fft.fftn(lr, dim=tuple(dims), norm="forward")
    for d, n_hr in zip(dims, hr_shape):
        n_lr = lr.shape[d]
        hr_index, lr_index = _band(n_hr, n_lr, real, lr.device)
        phase = _shift_phase(n_hr, n_lr, hr_index, spectrum.dtype)
        trailing = [1] * (spectrum.ndim - 1 - d % spectrum.ndim)
        picked = spectrum.index_select(d, lr_index) * phase.reshape([-1] + trailing)
        shape = list(spectrum.shape)
        shape[d] = n_hr
        spectrum = torch.zeros(shape, dtype=spectrum.dtype, device=lr.device).index_copy_(d, hr_index, picked)
    return spectrum


def replace_measured(estimate: torch.Tensor, lr: torch.Tensor, dims: Sequence[int] = (-2, -1),
                     weight: float = 1.0) -> torch.Tensor:
    """Replace (weight 1) or blend (0 < weight < 1) the estimate's measured k-space by the LR's.

    K = K_est + weight · M ⊙ (K_LR − K_est) on the HR frequency grid, using only the LR acquisition.
    estimate (..., H, W), lr (..., h, w) with h ≤ H, w ≤ W along `dims` → (..., H, W); real in, real out.
    """
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"k-space replacement weight {weight} is invalid: use a number in [0, 1]")
    dims = _check_dims(estimate, lr, dims)
    hr_shape = [estimate.shape[d] for d in dims]
    measured = embed_lr_kspace(lr, hr_shape, dims)
    mask = measured_mask(hr_shape, [lr.shape[d] for d in dims], not lr.is_complex(), estimate.device)
    shape = [estimate.shape[d] if d in dims else 1 for d in range(estimate.ndim)]
    mask = mask.reshape(shape)
    spectrum = torch.fft.fftn(estimate, dim=tuple(dims), norm="forward")
    spectrum = torch.where(mask, spectrum + weight * (measured - spectrum), spectrum)
    out = torch.fft.ifftn(spectrum, dim=tuple(dims), norm="forward")
    return out if estimate.is_complex() else out.real.to(estimate.dtype)


def kspace_dc_loss(output: torch.Tensor, target: torch.Tensor, lr_shape: Sequence[int]) -> torch.Tensor:
    """L_dc of Eq. 5: mean |K_DC − K_HR|² over the 2D spectrum, K_DC = the output's k-space with the
    measured bins replaced by the acquisition's.

    output, target (B, c, H, W). With the acquisition simulated from the target (training), the
    measured bins equal the target's, so K_DC − K_HR is the output's error outside the measured band.
    Unnormalised FFT as in the public code, so λ₂ = 0.001 weighs it as in the paper at 256² slices.
    """
    mask = measured_mask(output.shape[-2:], lr_shape, not output.is_complex(), output.device)
    error = torch.fft.fft2(output - target) * (~mask)
    return (error.real**2 + error.imag**2).mean()
