"""Cancel and failure: the scene is left exactly as it was, temporary files are gone, the process tree
is dead, and the backend's one-line error reaches the user."""

from __future__ import annotations

import os
import sys
import textwrap
import time

import pytest
pytest.importorskip("slicer", reason="slicer-core is not installed")

from MRISuperResolutionLib import EnhanceCancelled, EnhanceError, EnhanceParameters
from MRISuperResolutionLib.process import BackendProcess, errorMessage, parseProgressLine


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def poll_until(job, condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while job.poll() and not condition(job):
        assert time.monotonic() < deadline, f"no {condition.__doc__} within {timeout} s"
        time.sleep(0.05)


def test_cancel_mid_run_leaves_no_new_nodes_and_no_temp_files(world, thick_volume, logic):
    inputNode = world.loadVolume(thick_volume, "T1")
    before = world.nodeIDs()
    finished = []
    # Lanczos takes ~10 s per million voxels on 2 cores: long enough to be cancelled while it works.
    job = logic.enhance(inputNode, method="lanczos", blocking=False, onFinished=finished.append)

    def working(job):
        """interpolation stage"""
        return job.progress is not None and job.progress.stage not in ("load",)

    poll_until(job, working)
    assert job.running and os.listdir(world.tempRoot)  # the input was written for the backend
    pid = job.process.pid
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 5
    assert job.state == "cancelled" and finished == [job]
    with pytest.raises(EnhanceCancelled, match="cancelled"):
        job.result()
    assert not pid_alive(pid)
    assert world.nodeIDs() == before
    assert os.listdir(world.tempRoot) == []
    assert "unchanged" in job.statusText()


def test_backend_failure_surfaces_its_one_line_message_and_leaves_the_scene_unchanged(world, thick_volume, logic):
    inputNode = world.loadVolume(thick_volume, "T1")
    before = world.nodeIDs()
    with pytest.raises(EnhanceError) as caught:
        logic.enhance(inputNode, method="nearest", targetSpacing=(0.01, 0.01, 0.01))
    message = str(caught.value)
    assert "over the budget" in message and "target spacing" in message  # the backend's own words
    assert "\n" not in message and not message.startswith("mrisr:")
    assert world.nodeIDs() == before
    assert os.listdir(world.tempRoot) == []


def test_missing_interpreter_is_a_clear_error(world, thick_volume, logic):
    inputNode = world.loadVolume(thick_volume, "T1")
    logic.pythonExecutable = str(world.tempRoot / "no-such-python")
    with pytest.raises(EnhanceError, match="cannot start the backend"):
        logic.start(inputNode, EnhanceParameters(method="nearest"))
    assert os.listdir(world.tempRoot) == []


FAKE_BACKEND = textwrap.dedent("""
    import json, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print(child.pid, flush=True)
    for done in range(1000):
        print(json.dumps({"stage": "sample", "done": done, "total": 1000, "message": ""}), file=sys.stderr, flush=True)
        time.sleep(0.05)
""")


def test_cancel_kills_the_whole_process_tree(tmp_path):
    process = BackendProcess([sys.executable, "-c", FAKE_BACKEND]).start()
    deadline = time.monotonic() + 30
    updates = []
    while not updates or not process.stdoutLines:
        assert time.monotonic() < deadline
        updates += process.poll()
        time.sleep(0.05)
    child = int(process.stdoutLines[0])
    assert pid_alive(child) and updates[0].stage == "sample"
    process.cancel()
    assert process.finished and process.cancelled
    deadline = time.monotonic() + 5
    while pid_alive(child) and time.monotonic() < deadline:  # the orphan is reaped by init
        time.sleep(0.05)
    assert not pid_alive(child)


def test_progress_and_error_lines_are_parsed():
    update = parseProgressLine('{"stage": "sample", "done": 3, "total": 12, "message": "step 3"}')
    assert (update.stage, update.done, update.total, update.message) == ("sample", 3, 12, "step 3")
    assert update.stageFraction == 0.25 and 0.05 < update.overallFraction < 0.95
    assert parseProgressLine("wrote out.nii") is None and parseProgressLine("{not json") is None
    assert parseProgressLine('{"stage": "load", "done": 1, "total": 1}').overallFraction == pytest.approx(0.05)
    lines = ['{"stage": "load", "done": 0, "total": 1}', "Traceback ...", "mrisr: error: input is 2D: use a 3D volume"]
    assert errorMessage(lines, 2) == "input is 2D: use a 3D volume"
    assert errorMessage(["Killed"], -9) == "Killed"
    assert "exit code 1" in errorMessage([], 1)
