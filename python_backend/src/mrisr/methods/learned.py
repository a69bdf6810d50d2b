"""Shared plumbing of learned methods: the model card named by the registry, weights, device, seeds."""

from __future__ import annotations

from typing import Any, Callable

import torch

from mrisr.device import autocast_dtype  # noqa: F401 - the learned methods' precision choice
from mrisr.io.model_store import load_card, load_state_dict
from mrisr.registry import MethodSpec


def card_for(spec: MethodSpec) -> dict[str, Any]:
    """The model card the registry entry names (config.card); InputError if it is not installed."""
    return load_card(spec.config["card"])


def load_network(card: dict[str, Any], build: Callable[[dict[str, Any]], torch.nn.Module], device: str) -> torch.nn.Module:
    """Build the network from the card's config, load its verified weights, move it to `device`, eval mode."""
    network = build(card["network"])
    network.load_state_dict(load_state_dict(card))
    return network.to(device).eval()


def generator_for(device: str, seed: int) -> torch.Generator:
    """A seeded generator on the sampling device (no global seeding)."""
    return torch.Generator(device=device).manual_seed(int(seed))
