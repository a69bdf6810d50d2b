"""A failed run keeps the backend's whole stderr for "Show details" and writes it to the log; progress
prefers the backend's own whole-run fraction and remaining time when its lines carry them; every
running job, from the panel or the Python console, is known and cancelled when Slicer closes the scene."""

from __future__ import annotations

import logging
import os
import sys
import textwrap
import time

import pytest
pytest.importorskip("slicer", reason="slicer-core is not installed")

from MRISuperResolutionLib import EnhanceError, EnhanceParameters  # noqa: E402
from MRISuperResolutionLib.logic import EnhanceJob, cancelRunningJobs, runningJobs  # noqa: E402
from MRISuperResolutionLib.parameters import RunPlan  # noqa: E402
from MRISuperResolutionLib.process import STAGE_WEIGHTS, BackendProcess, parseProgressLine  # noqa: E402
from mrisr_slicer_testing import makeLogic  # noqa: E402

# Makes the real backend's interpolation fail with an unexpected exception (a bug, not a refusal): the CLI
# then prints a whole traceback, of which the panel's one line is only the last.
FAILING_METHOD_HOOK = """
import mrisr.methods.interpolation as interpolation
def run(self, inputs, progress, cancel):
    raise RuntimeError("injected failure in the method")
interpolation.InterpolationMethod.run = run
"""


def test_a_failure_keeps_the_backends_whole_stderr_and_logs_it(world, thick_volume, logic, tmp_path, monkeypatch,
                                                               caplog):
    inputNode = world.loadVolume(thick_volume, "T1")
    (tmp_path / "sitecustomize.py").write_text(FAILING_METHOD_HOOK)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    before = world.nodeIDs()
    job = logic.enhance(inputNode, method="nearest", blocking=False)
    with caplog.at_level(logging.ERROR), pytest.raises(EnhanceError) as caught:
        job.wait(timeout=120)
    assert str(caught.value) == "RuntimeError: injected failure in the method"  # the panel's one line
    assert job.state == "failed" and "\n" not in job.errorMessage
    assert job.details.startswith("Traceback (most recent call last):")
    assert "mrisr/pipeline.py" in job.details and 'raise RuntimeError("injected failure in the method")' in job.details
    assert not any(parseProgressLine(line) for line in job.details.splitlines())  # progress lines are not details
    logged = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert any(job.details in message for message in logged)
    assert world.nodeIDs() == before and os.listdir(world.tempRoot) == []


def test_a_refusal_is_its_own_details(world, thick_volume, logic):
    inputNode = world.loadVolume(thick_volume, "T1")
    job = logic.enhance(inputNode, method="nearest", blocking=False)
    job.cancel()
    assert job.details == ""  # nothing to show for a cancel


LINE_WITHOUT = '{"stage": "sample", "done": 3, "total": 12, "message": "step 3"}'
LINE_WITH = '{"stage": "sample", "done": 3, "total": 12, "message": "step 3", "overall": 0.42, "eta_s": 81.5}'
LINE_ETA_UNKNOWN = '{"stage": "load", "done": 0, "total": 1, "message": "in.nii", "overall": 0.0, "eta_s": null}'


def test_progress_lines_with_and_without_the_whole_run_fields():
    old = parseProgressLine(LINE_WITHOUT)
    assert (old.overall, old.etaSeconds) == (None, None)
    low, high = STAGE_WEIGHTS.get("sample", (0.05, 0.95))
    assert old.overallFraction == pytest.approx(low + (high - low) * 0.25)  # the local guess
    new = parseProgressLine(LINE_WITH)
    assert (new.stage, new.done, new.total) == ("sample", 3, 12)
    assert new.overallFraction == 0.42 and new.etaSeconds == 81.5  # the backend's own numbers win
    unknown = parseProgressLine(LINE_ETA_UNKNOWN)
    assert unknown.overallFraction == 0.0 and unknown.etaSeconds is None
    assert parseProgressLine('{"stage": "x", "done": 1, "total": 2, "overall": "soon"}') is None


SCRIPTED_BACKEND = textwrap.dedent("""
    import json, sys, time
    # 20 steps of a work stage, then a save stage: what the local guess would show as a jump to 0.95
    for done in range(21):
        print(json.dumps({"stage": "sample", "done": done, "total": 20, "overall": 0.9 * done / 20,
                          "eta_s": 2.0 * (20 - done) + 1.0}), file=sys.stderr, flush=True)
    print(json.dumps({"stage": "save", "done": 0, "total": 1, "overall": 0.9, "eta_s": 1.0}), file=sys.stderr, flush=True)
    time.sleep(60)
""")


def test_the_job_follows_the_backends_fraction_and_shows_the_time_left(catalog, tmp_path):
    process = BackendProcess([sys.executable, "-c", SCRIPTED_BACKEND]).start()
    workDir = tmp_path / "work"
    workDir.mkdir()
    job = EnhanceJob(None, process, str(workDir), None, None, catalog.get("bspline"), EnhanceParameters(),
                     RunPlan(None, None, None, None, {}, ()))
    fractions = []
    try:
        deadline = time.monotonic() + 60
        while len(job.updates) < 22:
            assert job.poll() and time.monotonic() < deadline
            fractions.append(job.fraction)
            time.sleep(0.02)
        assert [round(u.overallFraction, 6) for u in job.updates] == [round(0.9 * d / 20, 6) for d in range(21)] + [0.9]
        assert job.fraction == pytest.approx(0.9)  # not the local guess's 0.95 for the save stage
        assert fractions == sorted(fractions)
        assert job.remainingSeconds == 1.0 and job.statusText() == "bspline: save, about 1 s left"
    finally:
        job.cancel()
    assert job.remainingSeconds is None


@pytest.mark.parametrize("cancelAt", ["scene close"])
def test_console_and_panel_jobs_are_all_cancelled_when_slicer_closes(world, thick_volume, catalog, cancelAt):
    inputNode = world.loadVolume(thick_volume, "T1")
    panel, console = makeLogic(world, catalog), makeLogic(world, catalog)  # two logics, as panel and console have
    before = world.nodeIDs()
    jobs = [logic.enhance(inputNode, method="lanczos", blocking=False) for logic in (panel, console)]
    assert set(runningJobs()) >= set(jobs)
    pids = [job.process.pid for job in jobs]
    assert cancelRunningJobs() >= 2
    assert [job.state for job in jobs] == ["cancelled", "cancelled"] and runningJobs() == []
    for pid in pids:
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
    assert world.nodeIDs() == before and os.listdir(world.tempRoot) == []


def test_a_real_run_follows_the_backends_own_fraction_when_it_sends_one(world, thick_volume, logic):
    inputNode = world.loadVolume(thick_volume, "T1")
    trace, texts = [], []

    def onProgress(job):
        trace.append((job.fraction, job.progress.overall))
        texts.append(job.statusText())

    job = logic.enhance(inputNode, method="linear", blocking=False, onProgress=onProgress)
    job.wait(timeout=120)
    if not all(update.overall is not None for update in job.updates):
        pytest.skip("this backend's progress lines carry no 'overall' yet")
    assert [fraction for fraction, _ in trace] == [max(o for _, o in trace[:i + 1]) for i in range(len(trace))]
    assert job.updates[-1].overall == 1.0 and job.fraction == 1.0
    if any(update.etaSeconds is not None for update in job.updates):
        assert any(text.endswith(" left") for text in texts)
