"""Fast / Balanced / Best: the panel's presets, from what the backend measured and exports.

A preset picks the method, its steps (and start step, patch size, overlap), the number of samples and
whether to adapt to the scan. No number is kept here: every value comes from `mrisr methods --json`.

When the backend exports presets itself (a top-level `"presets"` list in `mrisr methods --json`, each
`{"name": "Balanced", "method": "…", "steps": 1, "samples": 1, "adapt": false, "why": "…"}`; omitted
fields mean the method's defaults), they are used as they are. Until then they are derived from the
registry with this rule:

- **Fast**: the backend's default method (`default_method`; the backend keeps the method that was not
  beaten on real scans as its default) with its defaults.
- **Balanced**: the learned method (kind "diffusion") that needs no second contrast and has the lowest
  measured CPU rate (`seconds_per_megavoxel.cpu`) at its default steps; no adaptation.
- **Best**: a learned method that needs no second contrast and may adapt to the scan (registry
  `"adaptation": true`), at its default steps, adapted for the backend's default budget
  (`limits.adapt_seconds.default`): adaptation is what turned a learned method from below to above
  B-spline on real scans. Without such a method, Best is Balanced.

All presets use one sample (averaging samples was measured to add nothing for the single-step methods and
multiplies the time) and need no reference volume, so a preset never asks for more than the input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

from .estimates import secondsPerMegavoxel
from .parameters import EnhanceError, EnhanceParameters, MethodCatalog, MethodInfo

FAST, BALANCED, BEST = "Fast", "Balanced", "Best"
PRESET_NAMES = (FAST, BALANCED, BEST)


@dataclass(frozen=True)
class Preset:
    """One preset: a method and the values of its options (None: the option does not apply)."""

    name: str
    method: str
    steps: Optional[int]
    startStep: Optional[int]
    patchSize: Optional[int]
    overlap: float
    samples: int
    adaptSeconds: float  # 0: no adaptation
    why: str  # where the choice comes from, for the panel's tooltip

    def parameters(self, base: EnhanceParameters = EnhanceParameters()) -> EnhanceParameters:
        """`base` (target spacing, device, seed, segmentation…) with this preset's method and options."""
        return base.replace(method=self.method, steps=self.steps, startStep=self.startStep, patchSize=self.patchSize,
                            overlap=self.overlap, samples=self.samples, adapt=self.adaptSeconds)

    def matches(self, parameters: EnhanceParameters, catalog: MethodCatalog) -> bool:
        """Whether `parameters` are this preset's choices (options the method lacks are ignored)."""
        if parameters.method != self.method:
            return False
        method = catalog.get(self.method)
        mine, theirs = self.parameters().forMethod(method), parameters.forMethod(method)
        fields = ("steps", "startStep", "patchSize", "samples", "adapt")
        same = all(getattr(mine, name) == getattr(theirs, name) for name in fields)
        return same and (not method.usesPatches or abs(mine.overlap - theirs.overlap) < 1e-6)


def _fromMethod(name: str, method: MethodInfo, catalog: MethodCatalog, why: str, steps: Optional[int] = None,
                samples: int = 1, adaptSeconds: float = 0.0) -> Preset:
    def default(option: str) -> Optional[int]:
        allowed = method.optionRange(option)
        return None if allowed is None else allowed.default

    return Preset(name, method.name, default("steps") if steps is None or method.steps is None else int(steps),
                  default("startStep"), default("patchSize"), catalog.limits.overlapDefault, int(samples),
                  float(adaptSeconds) if method.adapts else 0.0, why)


def _cpuRate(method: MethodInfo) -> Optional[float]:
    return secondsPerMegavoxel(method).get("cpu")


def derivedPresets(catalog: MethodCatalog) -> tuple[Preset, ...]:
    """Fast / Balanced / Best by the rule in the module docstring."""
    fast = _fromMethod(FAST, catalog.get(catalog.defaultMethod), catalog, "the backend's default method")
    learned = [m for m in catalog.methods if m.kind == "diffusion" and not m.needsReference]
    measured = [m for m in learned if _cpuRate(m) is not None]
    if not measured:
        return (fast,)
    quickest = min(measured, key=_cpuRate)
    balanced = _fromMethod(BALANCED, quickest, catalog,
                           f"the quickest learned method measured ({_cpuRate(quickest):g} s per million output voxels on CPU)")
    adapting = [m for m in measured if m.adapts]
    if not adapting or catalog.limits.adaptDefaultSeconds <= 0:
        return fast, balanced, dataclasses.replace(balanced, name=BEST)
    chosen = min(adapting, key=_cpuRate)
    best = _fromMethod(BEST, chosen, catalog, "a learned method adapted to this scan for the backend's default budget",
                       adaptSeconds=catalog.limits.adaptDefaultSeconds)
    return fast, balanced, best


def exportedPresets(catalog: MethodCatalog, entries: Sequence[dict]) -> tuple[Preset, ...]:
    """The backend's own presets (`"presets"` of `mrisr methods --json`)."""
    presets = []
    for entry in entries:
        method = catalog.get(entry.get("method"))
        adapt = entry.get("adapt") or 0.0
        adaptSeconds = catalog.limits.adaptDefaultSeconds if adapt is True else float(adapt)
        presets.append(_fromMethod(str(entry["name"]), method, catalog, str(entry.get("why", "the backend's preset")),
                                   entry.get("steps"), int(entry.get("samples", 1)), adaptSeconds))
    if not presets:
        raise EnhanceError("the backend exports an empty presets list: update the mrisr backend")
    return tuple(presets)


def presetsFor(catalog: MethodCatalog) -> tuple[Preset, ...]:
    """The backend's presets when it exports them, else the derived ones."""
    return exportedPresets(catalog, catalog.presets) if catalog.presets else derivedPresets(catalog)


def presetNamed(presets: Sequence[Preset], name: str) -> Preset:
    for preset in presets:
        if preset.name.lower() == name.lower():
            return preset
    raise EnhanceError(f"unknown preset {name!r}: choose one of {', '.join(p.name for p in presets)}")


def matchingPreset(presets: Sequence[Preset], parameters: EnhanceParameters, catalog: MethodCatalog) -> Optional[Preset]:
    """The preset whose choices `parameters` are (None: custom settings)."""
    for preset in presets:
        if preset.matches(parameters, catalog):
            return preset
    return None
