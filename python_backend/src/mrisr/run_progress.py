"""The overall progress of one enhancement run: the stages it runs with their expected seconds (the
weights, kept here only), and the callback that turns stage events into one fraction and the time left.

A stage's expected seconds are its rate times the megavoxels it works on: the method's measured
`seconds_per_megavoxel` from the registry (scaled by its network evaluations and samples), the
adaptation budget, and the pipeline's own stages at the rates below. Only the ratios matter for
`overall`; the time left comes from the wall time the run has taken so far. Imports neither torch nor
the methods.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from mrisr.progress import ProgressCallback, ProgressEvent
from mrisr.registry import MethodSpec, get_spec

# Seconds per megavoxel (output voxels unless named otherwise) of the pipeline's own stages, measured
# with `resample`, `write_volume`, `self_check`, `back_project` and the tissue U-Net on one thread of the
# project's 2-core CPU: the MNI152 lowfield demo (1.9 M input, 9.6 M output voxels; segmentation: a
# 1 M-voxel head crop). K-space replacement is an estimate (FFTs of the output, cheaper than a B-spline).
LOAD_PER_INPUT_MEGAVOXEL = 0.05  # read and check the input (nii.gz)
PREPARE = 0.04  # normalise, foreground mask onto the output grid
SAVE_PER_FILE = 0.1  # one float32 output volume written as nii.gz
SELF_CHECK = 0.45
BACK_PROJECTION_PER_ITERATION = 0.25
SEGMENT = 3.0  # per segmented volume (the input interpolated, then the output)
KSPACE_REPLACEMENT = 0.1
REGISTER_SECONDS = 4.0  # rigid registration of the reference (on a fixed working resolution)
UNMEASURED_METHOD = 1.0  # a method without a measured rate
MIN_STAGE_SECONDS = 0.01

SAMPLING = "sampling"  # the method's own counter, whatever the method calls it
NESTED_STAGES = frozenset({"denoise"})  # counters within one unit of the sampling counter (SR3: steps of a batch)
ETA_MIN_OVERALL = 0.05  # below this share the time left is not estimated (null): fixed start-up costs dominate


@dataclass(frozen=True)
class Stage:
    """One stage of a run: its event name, its expected seconds and how often its counter runs from the
    start (the segmentation counts the input's slices, then the output's)."""

    name: str
    seconds: float
    repeats: int = 1


def method_rate(spec: MethodSpec, device: str = "cpu") -> float:
    """Measured seconds per output megavoxel of `spec` at its default steps on the device's class (a CPU
    rate stands in where the class has none)."""
    rates = spec.config.get("seconds_per_megavoxel") or {}
    return float(rates.get(device.split(":")[0], rates.get("cpu", UNMEASURED_METHOD)))


def network_evaluations(spec: MethodSpec, steps: int | None, start_step: int | None) -> int:
    """Network evaluations per unit of work: the steps, or the start step K where the method runs K of its
    steps (a partial chain on a fixed grid, DiffusionIQT)."""
    caps = spec.start_step is not None and spec.start_step.caps_steps
    if start_step and not caps:
        return start_step
    return steps or 1


def method_stages(spec: MethodSpec, megavoxels: float, steps: int | None, start_step: int | None,
                  samples: int = 1, device: str = "cpu") -> list[Stage]:
    """The method's stages: interpolation, or the B-spline condition, the reference's registration, the
    sampling (the registry's rate scaled by evaluations and samples) and the k-space replacement. None
    steps or start step: the method's default."""
    scale = samples * megavoxels
    if spec.kind == "interpolation":
        return [Stage("interpolate", method_rate(spec, device) * scale)]
    default_steps = spec.steps.default if spec.steps else None
    default_start = spec.start_step.default if spec.start_step else None
    default = network_evaluations(spec, default_steps, default_start)
    evaluations = network_evaluations(spec, steps or default_steps, default_start if start_step is None else start_step)
    total = method_rate(spec, device) * scale * evaluations / default
    auxiliary = [Stage("resample", method_rate(get_spec("bspline"), device) * scale)]
    if spec.config.get("needs_reference") and spec.config.get("register_reference", True):
        auxiliary.append(Stage("register", REGISTER_SECONDS * samples))
    after = [Stage("k-space replacement", KSPACE_REPLACEMENT * scale)] if spec.config.get("kspace_replacement") else []
    sampling = max(total - sum(s.seconds for s in auxiliary + after), total / 2)
    return auxiliary + [Stage(SAMPLING, sampling)] + after


def run_stages(spec: MethodSpec, input_voxels: int, output_voxels: int, *, steps: int | None = None,
               start_step: int | None = None, samples: int = 1, adapt_seconds: float = 0.0,
               back_projection: int = 0, outputs: int = 1, interpolated: bool = False, segment: bool = False,
               device: str = "cpu") -> tuple[Stage, ...]:
    """Every stage of one `enhance_file` run (and the caller's segmentation after it), in run order.

    outputs: volumes saved (the output, the uncertainty map); interpolated: the input interpolated onto the
    output grid is written too (a B-spline and a save)."""
    megavoxels, learned = output_voxels / 1e6, spec.kind != "interpolation"
    save = SAVE_PER_FILE * (outputs + interpolated) + (method_rate(get_spec("bspline")) if interpolated else 0.0)
    stages = [Stage("load", LOAD_PER_INPUT_MEGAVOXEL * input_voxels / 1e6), Stage("prepare", PREPARE * megavoxels)]
    stages += [Stage("adapt", adapt_seconds)] if adapt_seconds > 0 else []
    stages += method_stages(spec, megavoxels, steps, start_step, samples, device)
    stages += [Stage("back-projection", BACK_PROJECTION_PER_ITERATION * back_projection * megavoxels)] \
        if back_projection else []
    stages += [Stage("self-check", SELF_CHECK * megavoxels)] if learned else []
    stages += [Stage("save", save * megavoxels)]
    stages += [Stage("segment", 2 * SEGMENT * megavoxels, repeats=2)] if segment else []
    return tuple(dataclasses.replace(s, seconds=max(s.seconds, MIN_STAGE_SECONDS)) for s in stages)


class OverallProgress:
    """A progress callback that forwards every event with the run's `overall` fraction and `eta_s` added.

    `overall` is the expected seconds of the stages done so far over the run's expected seconds (the
    stages reached are done up to their counter, the earlier ones wholly); it never decreases. `eta_s` is
    the wall time so far times (1 − overall) / overall, None until ETA_MIN_OVERALL of the run is done.
    Before `expect` names the stages, events pass with overall 0. Stages the plan does not name are the
    method's sampling counter; NESTED_STAGES count within one of its units.
    """

    def __init__(self, report: ProgressCallback, clock: Callable[[], float] = time.monotonic) -> None:
        self.report, self.clock = report, clock
        self.started = clock()
        self.stages: tuple[Stage, ...] = ()
        self.overall = 0.0
        self.reached = -1  # index of the furthest stage an event came from
        self.fractions: dict[str, float] = {}
        self.counters: dict[str, tuple[int, int]] = {}  # per stage: its last (done, total)
        self.rounds: dict[str, int] = {}  # per repeated stage: how often its counter restarted

    def expect(self, stages: Sequence[Stage]) -> None:
        """The stages of this run, in run order, with their expected seconds."""
        self.stages = tuple(stages)

    def __call__(self, event: ProgressEvent) -> None:
        self.overall = max(self.overall, self._overall(event))
        self.report(dataclasses.replace(event, overall=self.overall, eta_s=self.eta()))

    def finish(self, message: str = "") -> None:
        """Report the end of the run (after work the stages' events do not cover, e.g. a segmenter without them)."""
        self.overall = 1.0
        self.report(ProgressEvent("done", 1, 1, message, 1.0, 0.0))

    def eta(self) -> float | None:
        """Seconds left, from the wall time so far and the overall fraction; None before ETA_MIN_OVERALL."""
        if self.overall < ETA_MIN_OVERALL:
            return None
        return max(0.0, (self.clock() - self.started) * (1.0 - self.overall) / self.overall)

    def _overall(self, event: ProgressEvent) -> float:
        names = [s.name for s in self.stages]
        name = event.stage if event.stage in names else SAMPLING
        if not self.stages or name not in names:
            return self.overall
        fraction = self._fraction(event, self.stages[names.index(name)])
        if fraction is None:
            return self.overall
        self.fractions[name] = max(self.fractions.get(name, 0.0), fraction)
        self.reached = max(self.reached, names.index(name))
        done = math.fsum(s.seconds * (1.0 if i < self.reached else self.fractions.get(s.name, 0.0))
                         for i, s in enumerate(self.stages))
        total = math.fsum(s.seconds for s in self.stages)
        return 1.0 if done >= total else done / total

    def _fraction(self, event: ProgressEvent, stage: Stage) -> float | None:
        """The stage's done fraction after `event` (None: the event says nothing about it)."""
        if event.stage in NESTED_STAGES:
            outer = self.counters.get(SAMPLING)
            if outer is None or event.total <= 0:
                return None
            return min(1.0, (outer[0] + min(1.0, event.done / event.total)) / outer[1])
        if event.total <= 0:
            return None
        previous = self.counters.get(stage.name)
        if previous is not None and event.done < previous[0] and stage.repeats > 1:
            self.rounds[stage.name] = self.rounds.get(stage.name, 0) + 1
        self.counters[stage.name] = (event.done, event.total)
        return min(1.0, (self.rounds.get(stage.name, 0) + event.done / event.total) / stage.repeats)


def carried_overall(report: ProgressCallback) -> ProgressCallback:
    """`report` with the last overall seen (0 at first) given to events that carry none: for callers around
    a tracked run (a server client's upload and download, the demo's own steps)."""
    last = 0.0

    def forward(event: ProgressEvent) -> None:
        nonlocal last
        if event.overall is None:
            event = dataclasses.replace(event, overall=last)
        last = event.overall
        report(event)

    return forward
