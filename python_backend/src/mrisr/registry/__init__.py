"""The method registry: methods are data, not code paths.

Every JSON file in this folder holds a list of method entries ("methods") and may name the default
method ("default_method", only methods.json does). An entry names its implementation class
("implementation": "module:Class", relative to mrisr.methods), its option ranges and its config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from mrisr.errors import InputError


@dataclass(frozen=True)
class Range:
    """Allowed integer values of a sampling option, with its default.

    caps_steps (start step only): the sampler takes at most K steps from t_K (SR3/DDIM), so a start
    step given alone also lowers the default steps; off where steps is the grid K lies on (VDM, T).
    """

    default: int
    minimum: int
    maximum: int
    multiple_of: int = 1
    caps_steps: bool = False

    def check(self, name: str, flag: str, value: int | None, method: str) -> int:
        if value is None:
            return self.default
        if not self.minimum <= value <= self.maximum or value % self.multiple_of:
            rule = f"{self.minimum}..{self.maximum}"
            rule += f", a multiple of {self.multiple_of}" if self.multiple_of > 1 else ""
            raise InputError(f"{name} {value} is out of range for method {method!r}: use {flag} in {rule}")
        return value


@dataclass(frozen=True)
class MethodSpec:
    """One registered method: how it runs, its defaults and (for learned methods) its model card."""

    name: str
    kind: str
    description: str
    implementation: str = "interpolation:InterpolationMethod"
    interpolator: str = "bspline"
    steps: Range | None = None
    start_step: Range | None = None
    patch_size: Range | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MethodSpec":
        ranges = {k: Range(**data[k]) for k in ("steps", "start_step", "patch_size") if k in data}
        plain = {k: v for k, v in data.items() if k not in ranges}
        return cls(**plain, **ranges)


def _files() -> list[dict[str, Any]]:
    """The registry files, methods.json first, then the others by name."""
    folder = resources.files(__package__)
    names = sorted(e.name for e in folder.iterdir() if e.name.endswith(".json"))
    names.sort(key=lambda n: n != "methods.json")
    return [json.loads(folder.joinpath(n).read_text(encoding="utf-8")) for n in names]


def method_specs() -> dict[str, MethodSpec]:
    """All registered methods by name, in registry order."""
    return {m["name"]: MethodSpec.from_dict(m) for f in _files() for m in f.get("methods", [])}


def default_method() -> str:
    """The method the CLI and the panel use when none is chosen."""
    return _files()[0]["default_method"]


def presets() -> list[dict[str, Any]]:
    """Fast / Balanced / Best as measured choices (method, steps, samples, adapt, why): the panel's presets."""
    return list(_files()[0].get("presets", []))


def get_spec(name: str) -> MethodSpec:
    """The spec of a method, or an InputError listing the known ones."""
    specs = method_specs()
    if name not in specs:
        raise InputError(f"unknown method {name!r}: choose one of {', '.join(specs)} (see `mrisr methods`)")
    return specs[name]
