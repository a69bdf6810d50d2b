"""Scan-adaptive fine-tuning: start from a method's shipped weights and train on pairs cut from the scan
itself (`mrisr.adaptation.pairs`) for a time budget; the result is cached per input
(`mrisr.adaptation.cache`), so re-running with other steps or samples reuses it.

The loop knows nothing of the method: a method passes its network, its training loss on a
(condition, target) batch in [0, 1], and how its weights are identified.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch

from mrisr.adaptation.cache import cache_key, load_adapted, store_adapted
from mrisr.adaptation.pairs import ScanPairs, SliceProfile
from mrisr.adaptation.settings import AdaptSettings
from mrisr.imaging.foreground import foreground_mask
from mrisr.imaging.geometry import Grid
from mrisr.progress import CancelToken, ProgressCallback, ProgressEvent

log = logging.getLogger(__name__)

PairLoss = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
"""(network in train mode, condition (B, 1, H, W), target (B, 1, H, W), both normalised ~[0, 1], generator)
→ scalar loss: the method's own training objective on these pairs."""


def _train(network: torch.nn.Module, loss: PairLoss, pairs: ScanPairs, settings: AdaptSettings, device: str,
           progress: ProgressCallback, cancel: CancelToken) -> int:
    """Adam on fresh random pairs until the budget (or `max_steps`) is spent, the learning rate following a
    cosine over the budget; the network ends with the exponential moving average of its weights.
    Returns the number of steps."""
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    optimiser = torch.optim.Adam(network.parameters(), lr=settings.learning_rate)
    average = {name: p.detach().clone() for name, p in network.named_parameters()}
    network.train()
    started, steps = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - started) < settings.seconds and steps != settings.max_steps:
        cancel.check()
        fraction = max(elapsed / settings.seconds, steps / settings.max_steps if settings.max_steps else 0.0)
        for group in optimiser.param_groups:
            group["lr"] = settings.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(fraction, 1.0)))
        condition, target = (torch.from_numpy(a).to(device) for a in pairs.batch(rng, settings.batch_size))
        value = loss(network, condition, target, generator)
        optimiser.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimiser.step()
        steps += 1
        _update_average(average, network, min(settings.ema_decay, (1 + steps) / (10 + steps)))
        progress(ProgressEvent("adapt", min(int(elapsed), int(settings.seconds)), int(settings.seconds),
                               f"adapting to this scan: step {steps}, loss {value.item():.4f}"))
    with torch.no_grad():
        for name, p in network.named_parameters():
            p.copy_(average[name])
    network.eval()
    return steps


@torch.no_grad()
def _update_average(average: dict[str, torch.Tensor], network: torch.nn.Module, decay: float) -> None:
    """average ← decay · average + (1 − decay) · weights (the warm-up decay keeps early steps from dominating)."""
    for name, p in network.named_parameters():
        average[name].lerp_(p.detach(), 1.0 - decay)


def adapted_network(network: torch.nn.Module, weights_sha256: str, method: str, lr: sitk.Image, grid: Grid,
                    loss: PairLoss, settings: AdaptSettings, device: str, progress: ProgressCallback,
                    cancel: CancelToken) -> torch.nn.Module:
    """A copy of `network` fine-tuned on `lr` (normalised, on its own grid) for output `grid`, from the
    cache when this input, method, weights and settings were adapted before."""
    volume = sitk.GetArrayFromImage(lr)
    key = cache_key(volume, lr.GetSpacing(), method, weights_sha256,
                    {**asdict(settings), "output_spacing": [round(s, 6) for s in grid.spacing]})
    adapted = copy.deepcopy(network).to(device)
    cached = load_adapted(key)
    if cached is not None:
        adapted.load_state_dict(cached)
        progress(ProgressEvent("adapt", 1, 1, "adapted weights for this scan from the cache"))
        return adapted.eval()
    profile = SliceProfile.of(lr.GetSpacing(), settings.slice_thickness)
    pairs = ScanPairs(volume, lr.GetSpacing(), grid.spacing, profile, foreground_mask(volume), settings.patch)
    started = time.perf_counter()
    steps = _train(adapted, loss, pairs, settings, device, progress, cancel)
    seconds = time.perf_counter() - started
    log.info("adapted %s to this scan: %d steps in %.0f s", method, steps, seconds)
    store_adapted(key, adapted.state_dict(), {"method": method, "weights_sha256": weights_sha256,
                                              "settings": asdict(settings), "steps": steps,
                                              "seconds": round(seconds, 1), "profile": asdict(profile)})
    progress(ProgressEvent("adapt", int(settings.seconds), int(settings.seconds), f"adapted in {steps} steps"))
    return adapted.eval()
