"""What the user chose (EnhanceParameters), what the backend offers (MethodCatalog, BackendLimits) and
what it will make of a run (RunPlan).

The catalog is the backend's method registry and limits as `mrisr methods --json` prints them, and a
RunPlan is the answer of `mrisr plan`: the panel fills itself from them and the logic checks a run with
`mrisr plan` before starting it, so no backend rule or limit is copied here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

OPTION_FLAGS = {"steps": "--steps", "startStep": "--start-step", "patchSize": "--patch-size"}
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

    @property
    def adapts(self) -> bool:
        """The method can be fine-tuned on the scan itself first (`enhance --adapt`; registry "adaptation")."""
        return bool(self.config.get("adaptation", False))

    def stepsLabel(self, steps: Optional[int]) -> str:
        """"1 step" / "20 steps" for the steps a run uses (the default when None); "" without steps."""
        if self.steps is None:
            return ""
        count = self.steps.default if steps is None else int(steps)
        return f"{count} step" + ("" if count == 1 else "s")


def panelOptions(method: MethodInfo) -> dict[str, bool]:
    """Which optional panel rows a method needs: a null range in the registry means "no such option"."""
    return {
        "steps": method.steps is not None,
        "startStep": method.startStep is not None,
        "patchSize": method.usesPatches,
        "overlap": method.usesPatches,
        "reference": method.needsReference,
        "samples": method.kind == "diffusion",
        "adapt": method.adapts,
    }


@dataclass(frozen=True)
class BackendLimits:
    """The backend's limits, as `mrisr methods --json` exports them from its own constants."""

    maxSamples: int
    maxBackProjection: int
    overlapDefault: float
    overlapMinimum: float
    overlapBelow: float
    maxVoxels: int
    adaptDefaultSeconds: float = 0.0  # 0: this backend cannot adapt to the scan
    adaptMaximumSeconds: float = 0.0

    @classmethod
    def fromRegistry(cls, data: Optional[dict]) -> "BackendLimits":
        if not data:
            raise EnhanceError("the backend exports no limits (an older mrisr): update the mrisr backend")
        overlap, adapt = data["overlap"], data.get("adapt_seconds") or {}
        return cls(int(data["max_samples"]), int(data["max_back_projection"]), float(overlap["default"]),
                   float(overlap["minimum"]), float(overlap["below"]), int(data["max_voxels"]),
                   float(adapt.get("default", 0.0)), float(adapt.get("maximum", 0.0)))

    def panelRanges(self) -> dict[str, tuple[float, float]]:
        """(minimum, maximum) of the panel's samples and back-projection spin boxes, overlap slider and
        adaptation budget (seconds)."""
        return {"samples": (1, self.maxSamples), "backProjection": (0, self.maxBackProjection),
                "overlap": (self.overlapMinimum, self.overlapBelow - 0.05),
                "adaptSeconds": (min(1.0, self.adaptMaximumSeconds), self.adaptMaximumSeconds)}


@dataclass(frozen=True)
class MethodCatalog:
    """All methods the backend offers, in registry order, the default one and the backend's limits."""

    defaultMethod: str
    methods: tuple[MethodInfo, ...]
    limits: BackendLimits
    presets: tuple[dict, ...] = ()  # the backend's own presets, when it exports them (see presets.py)

    @classmethod
    def fromRegistry(cls, data: dict) -> "MethodCatalog":
        methods = tuple(MethodInfo.fromRegistry(m) for m in data["methods"])
        if not methods:
            raise EnhanceError("the backend registry lists no methods: reinstall the mrisr backend")
        names = [m.name for m in methods]
        default = data.get("default_method") if data.get("default_method") in names else names[0]
        return cls(default, methods, BackendLimits.fromRegistry(data.get("limits")),
                   tuple(dict(p) for p in data.get("presets") or ()))

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
    backProjection: int = 0  # back-projection iterations toward the acquired slices (0 = off)
    adapt: float = 0.0  # seconds of fine-tuning on the scan itself before the run (0 = off)
    sliceThickness: Optional[float] = None  # mm, for adaptation (default: DICOM SliceThickness, else spacing)

    def replace(self, **changes: Any) -> "EnhanceParameters":
        return dataclasses.replace(self, **changes)

    def forMethod(self, method: MethodInfo) -> "EnhanceParameters":
        """Drop the options this method does not have (the panel keeps values of hidden widgets)."""
        dropped = {name: None for name in OPTION_FLAGS if method.optionRange(name) is None}
        samples = self.samples if method.kind == "diffusion" else 1
        adapt = self.adapt if method.adapts else 0.0
        return dataclasses.replace(self, method=method.name, samples=samples, adapt=adapt, **dropped)

    def cliArguments(self, method: MethodInfo) -> list[str]:
        """The `mrisr enhance` (and `mrisr plan`) flags for these parameters, input/output paths not included.

        Nothing is checked here: `mrisr plan` checks them with the backend's own rules before a run.
        """
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
        if self.samples != 1:
            args += ["--samples", str(int(self.samples))]
        if self.backProjection:
            args += ["--back-projection", str(int(self.backProjection))]
        if self.adapt:
            args += ["--adapt", repr(float(self.adapt))]
        if self.sliceThickness is not None:
            args += ["--slice-thickness", repr(float(self.sliceThickness))]
        return args


@dataclass(frozen=True)
class RunPlan:
    """The backend's answer to `mrisr plan`: the output grid (x, y, z order, LPS), the files the run
    writes by role (output, uncertainty, interpolated, input_seg, output_seg, report), its refusals and
    its warnings (the run goes ahead, but e.g. outside the voxel sizes the method was trained for)."""

    outputSize: Optional[tuple[int, int, int]]
    outputSpacing: Optional[tuple[float, float, float]]
    outputVoxels: Optional[int]
    memoryMiB: Optional[float]
    files: dict[str, str]
    errors: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @classmethod
    def fromBackend(cls, data: dict) -> "RunPlan":
        output = data.get("output") or {}
        size, spacing = output.get("size"), output.get("spacing")
        return cls(tuple(int(v) for v in size) if size else None,
                   tuple(float(v) for v in spacing) if spacing else None,
                   output.get("voxels"), output.get("memory_mib"), dict(data.get("files") or {}),
                   tuple(str(e) for e in data.get("errors") or ()), tuple(str(w) for w in data.get("warnings") or ()))

    def check(self) -> None:
        """Raise the backend's first refusal as an EnhanceError (the message `mrisr enhance` would print)."""
        if self.errors:
            raise EnhanceError(self.errors[0])
