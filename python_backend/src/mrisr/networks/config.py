"""What every network config and network shares: the model-card dict round trip and a parameter count."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

from torch import nn

from mrisr.errors import InputError

C = TypeVar("C", bound="CardConfig")


class CardConfig:
    """Mixin for flat frozen dataclass configs stored in a model card's "network" entry (JSON lists
    become tuples again; unknown keys are errors, not silently dropped)."""

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{cls.__name__}: network config has unknown fields {unknown}: known are {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def parameter_count(module: nn.Module) -> int:
    """Number of parameters of a network."""
    return sum(p.numel() for p in module.parameters())
