"""The overall progress of a run: weights from the stages' expected seconds, a time left from the wall
clock, one fraction that only grows, and real `mrisr enhance --progress json` runs that move evenly.

The old Slicer-side scheme (load 0–5 %, save 95–100 %, every other stage 5–95 % by its own counter) is
replayed on the same lines to show the jump the new fraction no longer makes.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
import SimpleITK as sitk

from mrisr.progress import ProgressEvent
from mrisr.registry import get_spec
from mrisr.run_progress import SAMPLING, OverallProgress, Stage, carried_overall, run_stages
from mrisr.simulation.degradation import degrade, get_preset
from mrisr.simulation.template import mni_image

class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tracked(stages: list[Stage]) -> tuple[OverallProgress, list[ProgressEvent], FakeClock]:
    events: list[ProgressEvent] = []
    clock = FakeClock()
    run = OverallProgress(events.append, clock)
    run.expect(stages)
    return run, events, clock


def test_overall_is_the_share_of_expected_seconds_done_and_the_eta_comes_from_the_wall_clock():
    run, events, clock = tracked([Stage("load", 0.5), Stage("adapt", 10.0), Stage(SAMPLING, 8.5), Stage("save", 1.0)])
    run(ProgressEvent("load", 1, 1))
    assert events[-1].overall == pytest.approx(0.5 / 20) and events[-1].eta_s is None  # too early to tell
    clock.now += 10.0
    run(ProgressEvent("adapt", 5, 10))  # half of the 10 s budget
    assert events[-1].overall == pytest.approx(5.5 / 20)
    assert events[-1].eta_s == pytest.approx(10.0 * (1 - 0.275) / 0.275)
    run(ProgressEvent("slices", 2, 8))  # the method's own counter, whatever its name: adapt is done
    assert events[-1].overall == pytest.approx((10.5 + 8.5 * 2 / 8) / 20)
    run(ProgressEvent("save", 1, 1))
    assert events[-1].overall == 1.0 and events[-1].eta_s == 0.0


def test_before_the_stages_are_known_and_early_in_the_run_there_is_no_eta():
    events: list[ProgressEvent] = []
    clock = FakeClock()
    run = OverallProgress(events.append, clock)
    run(ProgressEvent("load", 0, 1))
    assert (events[-1].overall, events[-1].eta_s) == (0.0, None)
    run.expect([Stage("load", 1.0), Stage(SAMPLING, 999.0)])
    clock.now += 5.0
    run(ProgressEvent("load", 1, 1))
    assert events[-1].overall == pytest.approx(0.001) and events[-1].eta_s is None


def test_restarting_counters_never_move_it_back_and_the_repeated_segmentation_ends_at_one():
    run, events, _ = tracked([Stage("resample", 1.0), Stage(SAMPLING, 6.0), Stage("save", 1.0),
                              Stage("segment", 2.0, repeats=2)])
    run(ProgressEvent("resample", 1, 2))  # sample 1 of 2
    run(ProgressEvent("slices", 3, 6))
    run(ProgressEvent("resample", 2, 2))  # sample 2 of 2: resample reported again after the sampling began
    run(ProgressEvent("denoise", 1, 4))  # SR3's steps within the next slice batch
    assert events[-1].overall == pytest.approx((1 + 6 * (3 + 0.25) / 6) / 10)
    run(ProgressEvent("denoise", 1, 4))  # a restarted inner counter
    run(ProgressEvent("slices", 6, 6))
    run(ProgressEvent("save", 1, 1))
    for done in (1, 2, 1, 2):  # the input's segmentation, then the output's
        run(ProgressEvent("segment", done, 2))
    overall = [e.overall for e in events]
    assert overall == sorted(overall) and overall[-1] == 1.0
    assert overall[-3] == pytest.approx(0.9) and overall[-2] == pytest.approx(0.95)


def test_finish_ends_a_run_whose_last_stage_sent_no_events():
    run, events, _ = tracked([Stage(SAMPLING, 1.0), Stage("segment", 1.0, repeats=2)])
    run(ProgressEvent("interpolate", 1, 1))
    run.finish("segmented")
    assert [e.overall for e in events] == [0.5, 1.0] and events[-1].stage == "done" and events[-1].eta_s == 0.0


def test_expected_seconds_follow_the_registry_rates_the_steps_the_samples_and_the_budget():
    spec = get_spec("ressrdiff")
    rate = spec.config["seconds_per_megavoxel"]["cpu"]
    default = {s.name: s.seconds for s in run_stages(spec, 10**6, 10**7)}
    assert default["resample"] + default[SAMPLING] == pytest.approx(10 * rate)
    one_step = {s.name: s.seconds for s in run_stages(spec, 10**6, 10**7, steps=1, samples=2, adapt_seconds=60,
                                                      segment=True)}
    assert one_step["adapt"] == 60 and one_step["resample"] == pytest.approx(2 * default["resample"])
    assert one_step["resample"] + one_step[SAMPLING] == pytest.approx(2 * 10 * rate / 4)
    assert [s.name for s in run_stages(spec, 10**6, 10**7, segment=True)] == \
        ["load", "prepare", "resample", SAMPLING, "self-check", "save", "segment"]
    bspline = run_stages(get_spec("bspline"), 10**6, 10**7, back_projection=2, interpolated=True)
    assert [s.name for s in bspline] == ["load", "prepare", "interpolate", "back-projection", "save"]
    assert bspline[2].seconds == pytest.approx(10 * get_spec("bspline").config["seconds_per_megavoxel"]["cpu"])


def test_partial_diffusion_on_a_fixed_grid_costs_its_start_step_in_evaluations():
    spec = get_spec("diffusioniqt")  # K of T steps: K network evaluations
    by_k = {k: sum(s.seconds for s in run_stages(spec, 10**6, 10**7, steps=20, start_step=k)) for k in (5, 10)}
    assert by_k[10] > 1.8 * by_k[5]


def test_json_round_trip_and_events_of_an_older_server():
    event = ProgressEvent("slices", 3, 7, "3/7", 0.123456, 12.345)
    assert event.to_json() == {"stage": "slices", "done": 3, "total": 7, "message": "3/7", "overall": 0.1235,
                               "eta_s": 12.3}
    assert ProgressEvent.from_json(event.to_json()) == ProgressEvent("slices", 3, 7, "3/7", 0.1235, 12.3)
    old = ProgressEvent.from_json({"stage": "load", "done": 0, "total": 1, "message": ""})
    assert (old.overall, old.eta_s) == (None, None)


def test_carried_overall_fills_events_around_a_tracked_run():
    events: list[ProgressEvent] = []
    report = carried_overall(events.append)
    report(ProgressEvent("upload", 1, 1))
    report(ProgressEvent("slices", 1, 2, overall=0.4, eta_s=3.0))
    report(ProgressEvent("download", 1, 1))
    assert [e.overall for e in events] == [0.0, 0.4, 0.4]


@pytest.fixture(scope="module")
def thick_mni(tmp_path_factory):
    """48×64×40 voxels of the MNI152 T1 at 1 mm, acquired as 5 mm slices (thick5)."""
    hr = mni_image("t1")[60:108, 70:134, 40:80]
    path = tmp_path_factory.mktemp("progress") / "thick.nii.gz"
    sitk.WriteImage(degrade(hr, get_preset("thick5")), str(path))
    return path


def old_slicer_fraction(line: dict) -> float:
    """The fraction the Slicer module computed before the backend sent one (its STAGE_WEIGHTS)."""
    low, high = {"load": (0.0, 0.05), "save": (0.95, 1.0)}.get(line["stage"], (0.05, 0.95))
    return low + (high - low) * min(1.0, max(0.0, line["done"] / line["total"]))


@pytest.mark.parametrize("args, max_step", [
    (["--method", "bspline"], 0.6),  # one B-spline call, reported only as it starts and ends
    (["--method", "ressrdiff", "--steps", "1"], 0.3),
])
def test_a_real_run_moves_evenly_from_near_zero_to_one(tmp_path, thick_mni, args, max_step):
    run = subprocess.run([sys.executable, "-m", "mrisr.cli", "--progress", "json", "enhance", str(thick_mni),
                          str(tmp_path / "out.nii.gz"), *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert all({"stage", "done", "total", "message", "overall", "eta_s"} <= set(line) for line in lines)
    overall = [line["overall"] for line in lines]
    assert overall == sorted(overall) and overall[0] < 0.1 and overall[-1] == 1.0
    steps = [b - a for a, b in itertools.pairwise(overall)]
    old = [old_slicer_fraction(line) for line in lines]
    assert max(steps) <= max_step and max(b - a for a, b in itertools.pairwise(old)) == pytest.approx(0.9)  # the old jump
    eta = [line["eta_s"] for line in lines]
    assert eta[0] is None and eta[-1] == 0.0 and all(e is None or e >= 0 for e in eta)
