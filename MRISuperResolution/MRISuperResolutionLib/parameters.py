"""What the user chose (EnhanceParameters) and what the backend offers (MethodCatalog).

The catalog is the backend's method registry as `mrisr methods --json` prints it: the panel fills
itself from it, so a method added to the registry appears in Slicer without a change here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

OPTION_FLAGS = {"steps": "--steps", "startStep": "--start-step", "patchSize": "--patch-size"}
MAX_SAMPLES = 32  # the backend's limit (mrisr.inference.posterior_samples)
MAX_DATA_CONSISTENCY = 10  # the backend's limit (mrisr.imaging.backprojection)
REGISTRY_KEYS = {"steps": "steps", "startStep": "start_step", "patchSize": "patch_size"}


class EnhanceError(Exception):
    """A one-line, user-facing reason why an enhancement could not start or did not finish."""


class EnhanceCancelled(EnhanceError):
    """The user cancelled the enhancement; the scene was left unchanged."""


@dataclass(frozen=True)
class OptionRange:
    """Allowed integer values of a sampling option (steps, start step, patch size) and its default."""

    default: int
    minimum: int
    maximum: int
    multipleOf: int = 1

    @classmethod
    def fromRegistry(cls, data: Optional[dict]) -> Optional["OptionRange"]:
        if data is None:
            return None
        return cls(int(data["default"]), int(data["minimum"]), int(data["maximum"]), int(data.get("multiple_of", 1)))


@dataclass(frozen=True)
class MethodInfo:
    """One method of the backend registry, as the panel needs it."""

    name: str
    kind: str
    description: str
    steps: Optional[OptionRange] = None
    startStep: Optional[OptionRange] = None
    patchSize: Optional[OptionRange] = None
    config: dict = field(default_factory=dict)

    @classmethod
    def fromRegistry(cls, data: dict) -> "MethodInfo":
        ranges = {name: OptionRange.fromRegistry(data.get(key)) for name, key in REGISTRY_KEYS.items()}
        return cls(str(data["name"]), str(data.get("kind", "")), str(data.get("description", "")),
                   config=dict(data.get("config") or {}), **ranges)

    @property
    def needsReference(self) -> bool:
        """Multi-contrast methods need a reference volume of another contrast."""
        return bool(self.config.get("needs_reference", False))

    def optionRange(self, option: str) -> Optional[OptionRange]:
        """The range of "steps", "startStep" or "patchSize"; None when the method has no such option."""
        return getattr(self, option)

    @property
    def usesPatches(self) -> bool:
        return self.patchSize is not None


def panelOptions(method: MethodInfo) -> dict[str, bool]:
    """Which optional panel rows a method needs: a null range in the registry means "no such option"."""
    return {
        "steps": method.steps is not None,
        "startStep": method.startStep is not None,
        "patchSize": method.usesPatches,
        "overlap": method.usesPatches,
        "reference": method.needsReference,
        "samples": method.kind == "diffusion",
    }


@dataclass(frozen=True)
class MethodCatalog:
    """All methods the backend offers, in registry order, and the default one."""

    defaultMethod: str
    methods: tuple[MethodInfo, ...]

    @classmethod
    def fromRegistry(cls, data: dict) -> "MethodCatalog":
        methods = tuple(MethodInfo.fromRegistry(m) for m in data["methods"])
        if not methods:
            raise EnhanceError("the backend registry lists no methods: reinstall the mrisr backend")
        names = [m.name for m in methods]
        default = data.get("default_method") if data.get("default_method") in names else names[0]
        return cls(default, methods)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.methods]

    def get(self, name: Optional[str]) -> MethodInfo:
        """The method called `name` (the default when None), or an EnhanceError naming the known ones."""
        name = name or self.defaultMethod
        for method in self.methods:
            if method.name == name:
                return method
        raise EnhanceError(f"unknown method {name!r}: choose one of {', '.join(self.names)}")


@dataclass(frozen=True)
class EnhanceParameters:
    """Options of one enhancement; None means "the method's default" (or "no such option")."""

    method: Optional[str] = None
    steps: Optional[int] = None
    startStep: Optional[int] = None
    patchSize: Optional[int] = None
    overlap: float = 0.25
    targetSpacing: Optional[Sequence[float]] = None
    device: str = "auto"
    seed: int = 0
    batchSize: Optional[int] = None
    segment: bool = False  # also segment brain tissue of the interpolated input and of the output
    samples: int = 1  # diffusion methods: posterior samples averaged; > 1 also gives an uncertainty map
    dataConsistency: int = 0  # back-projection iterations toward the acquired slices (0 = off)

    def replace(self, **changes: Any) -> "EnhanceParameters":
        return dataclasses.replace(self, **changes)

    def forMethod(self, method: MethodInfo) -> "EnhanceParameters":
        """Drop the options this method does not have (the panel keeps values of hidden widgets)."""
        dropped = {name: None for name in OPTION_FLAGS if method.optionRange(name) is None}
        samples = self.samples if method.kind == "diffusion" else 1
        return dataclasses.replace(self, method=method.name, samples=samples, **dropped)

    def check(self, method: MethodInfo) -> None:
        """Refuse options the method does not take; ranges are checked by the backend itself."""
        for name, flag in OPTION_FLAGS.items():
            if getattr(self, name) is not None and method.optionRange(name) is None:
                raise EnhanceError(f"method {method.name!r} takes no {flag} (it has no such setting): leave it out")
        if not 0.0 <= self.overlap < 1.0:
            raise EnhanceError(f"overlap {self.overlap} is out of range: use a value in [0, 1)")
        if not 1 <= int(self.samples) <= MAX_SAMPLES:
            raise EnhanceError(f"samples {self.samples} is out of range: use 1 to {MAX_SAMPLES}")
        if self.samples > 1 and method.kind != "diffusion":
            raise EnhanceError(f"method {method.name!r} is deterministic, so its samples would all be equal: "
                               "use 1 sample or a diffusion method")
        if not 0 <= int(self.dataConsistency) <= MAX_DATA_CONSISTENCY:
            raise EnhanceError(f"data consistency {self.dataConsistency} is out of range: "
                               f"use 0 (off) to {MAX_DATA_CONSISTENCY} iterations")
        if self.targetSpacing is not None and len(self.targetSpacing) != 3:
            raise EnhanceError(f"target spacing needs 3 values (x y z in mm), got {list(self.targetSpacing)}")

    def cliArguments(self, method: MethodInfo) -> list[str]:
        """The `mrisr enhance` flags for these parameters (input/output paths not included)."""
        self.check(method)
        args = ["--method", method.name]
        for name, flag in OPTION_FLAGS.items():
            if getattr(self, name) is not None:
                args += [flag, str(int(getattr(self, name)))]
        if method.usesPatches:
            args += ["--overlap", repr(float(self.overlap))]
        if self.targetSpacing is not None:
            args += ["--target-spacing", *(repr(float(s)) for s in self.targetSpacing)]
        args += ["--device", self.device or "auto", "--seed", str(int(self.seed))]
        if self.batchSize is not None:
            args += ["--batch-size", str(int(self.batchSize))]
        if self.segment:
            args += ["--segment"]
        if self.samples > 1:
            args += ["--samples", str(int(self.samples))]
        if self.dataConsistency > 0:
            args += ["--data-consistency", str(int(self.dataConsistency))]
        return args
