"""Never lose or mislabel a result, and never leave a backend behind: result names and folders, re-runs
into a node, a cancel whose process tree does not die in time, backends whose Slicer died (--parent-pid)
and their temporary folders, and the minimum Slicer version checked before any download.

All with real subprocesses; the only stand-ins are a scripted backend (`STUBBORN_BACKEND`, a process
tree that will not die on SIGTERM and leaks its pipes, which the real backend never does on purpose)
and a sleeping process playing Slicer (the application cannot run here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from MRISuperResolutionLib import EnhanceParameters, dependencies  # noqa: E402
from MRISuperResolutionLib.logic import (  # noqa: E402
    OWNER_FILE, TEMP_PREFIX, UNCERTAINTY_ROLE, EnhanceJob, removeOrphanedWorkDirs)
from MRISuperResolutionLib.parameters import RunPlan  # noqa: E402
from MRISuperResolutionLib.process import BackendProcess, backendCommand, processAlive  # noqa: E402


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


@pytest.mark.slow
def test_rerunning_into_a_node_renames_it_moves_it_and_removes_what_the_new_run_did_not_make(world, thick_volume, logic):
    first = world.loadVolume(thick_volume, "Patient A T1")
    second = world.loadVolume(thick_volume, "Patient B T1")
    world.inStudyFolder(first, "Patient A")
    folderB = world.inStudyFolder(second, "Patient B")
    outputNode = logic.enhance(first, method="ressrdiff", steps=1, samples=2, segment=True,
                               targetSpacing=(2.0, 2.0, 2.0))
    assert outputNode.GetName() == "Patient A T1 enhanced (ressrdiff, 1 step)"
    stale = [*logic.segmentationNodes(outputNode), logic.tissueTable(outputNode), logic.uncertaintyNode(outputNode)]
    assert None not in stale
    again = logic.enhance(second, method="bspline", targetSpacing=(2.0, 2.0, 2.0), outputNode=outputNode)
    assert again is outputNode and outputNode.GetName() == "Patient B T1 enhanced (bspline)"
    assert all(node.GetScene() is None for node in stale)  # no earlier segmentation, table or uncertainty is left
    assert logic.segmentationNodes(outputNode) == (None, None) and logic.tissueTable(outputNode) is None
    assert outputNode.GetNodeReference(UNCERTAINTY_ROLE) is None
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(world.scene)
    assert shNode.GetItemParent(shNode.GetItemByDataNode(outputNode)) == folderB
    assert outputNode.GetNodeReference("MRISuperResolution.Input") is second
    assert outputNode.GetNodeReference("MRISuperResolution.Difference").GetName() == (
        "Patient B T1 enhanced (bspline) difference")
    assert outputNode.GetNodeReference("MRISuperResolution.Interpolated").GetName() == "Patient B T1 interpolated"


STUBBORN_BACKEND = textwrap.dedent("""
    import json, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    print(stray.pid, flush=True)  # in its own session: the group kill misses it, and it holds our pipes
    for done in range(10000):
        print(json.dumps({"stage": "sample", "done": done, "total": 10000}), file=sys.stderr, flush=True)
        time.sleep(0.05)
""")


def test_a_cancel_whose_process_tree_does_not_die_in_time_still_ends_the_job(world, catalog, tmp_path):
    process = BackendProcess([sys.executable, "-c", STUBBORN_BACKEND]).start()
    workDir = tmp_path / "work"
    workDir.mkdir()
    plan = RunPlan(None, None, None, None, {}, ())
    job = EnhanceJob(None, process, str(workDir), None, None, catalog.get("bspline"), EnhanceParameters(), plan)
    deadline = time.monotonic() + 30
    while not (job.updates and process.stdoutLines):
        assert job.poll() and time.monotonic() < deadline
        time.sleep(0.05)
    stray = int(process.stdoutLines[0])
    try:
        started = time.monotonic()
        process.cancel = lambda grace=3.0, cancel=process.cancel: cancel(grace=0.0)  # no time to die: wait() times out
        job.cancel()
        assert time.monotonic() - started < 10
        assert job.state == "cancelled" and not job.running and not job.poll()
        assert not workDir.exists()
    finally:
        os.kill(stray, signal.SIGKILL)
        if processAlive(process.pid):
            os.kill(process.pid, signal.SIGKILL)


def test_the_backend_stops_itself_when_slicer_dies(tmp_path, thick_volume):
    fakeSlicer = sleeper()
    output = tmp_path / "out" / "enhanced.nii"
    output.parent.mkdir()
    command = backendCommand(sys.executable, parentPid=fakeSlicer.pid) + [
        "enhance", str(thick_volume), str(output), "--method", "diffusioniqt", "--steps", "300", "--start-step", "300",
        "--target-spacing", "2", "2", "2"]
    backend = BackendProcess(command).start()
    try:
        deadline = time.monotonic() + 120
        updates = []
        while not any(update.stage == "sample" for update in updates):
            assert not backend.finished and time.monotonic() < deadline, backend.stderrLines
            updates += backend.poll()
            time.sleep(0.05)
        fakeSlicer.kill()
        fakeSlicer.wait()
        assert backend.wait(timeout=40) == 130
        said = " ".join(backend.stderrLines)
        # Normally the interrupt ends it ("interrupted"); under a loaded full suite it has once needed the hard
        # exit after the grace period (cli.PARENT_GONE_GRACE_SECONDS): stopped either way, with nothing written.
        assert "interrupted" in said or "has ended: stopping" in said
        assert os.listdir(output.parent) == []  # no output and no temporary file of it
    finally:
        if backend.returncode is None:
            backend.cancel()


def test_slicer_passes_its_own_pid_and_orphaned_temporary_folders_are_removed(world, logic, thick_volume):
    assert backendCommand(sys.executable)[-2:] == ["--parent-pid", str(os.getpid())]
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    alive = sleeper()
    try:
        folders = {}
        for name, pid in (("dead", ended.pid), ("alive", alive.pid), ("mine", os.getpid()), ("foreign", None)):
            folder = world.tempRoot / f"{TEMP_PREFIX}{name}"
            folder.mkdir()
            (folder / "input.nii").write_bytes(b"x")
            if pid is not None:
                (folder / OWNER_FILE).write_text(str(pid))
            folders[name] = folder
        inputNode = world.loadVolume(thick_volume, "T1")
        logic.plan(inputNode, EnhanceParameters("bspline"))  # every run's new folder sweeps the orphans first
        assert not folders["dead"].exists()
        assert folders["alive"].exists() and folders["mine"].exists() and folders["foreign"].exists()
        assert removeOrphanedWorkDirs(str(world.tempRoot)) == []
    finally:
        alive.kill()
        alive.wait()


def test_an_older_slicer_is_refused_plainly_before_any_download():
    problem = dependencies.versionProblem((5, 8, 1), (3, 9, 10))
    assert problem.startswith("MRISuperResolution needs 3D Slicer 5.10 or later")
    assert "Slicer 5.8.1 with Python 3.9.10" in problem and "\n" not in problem
    assert dependencies.versionProblem((5, 10, 0), (3, 12, 10)) is None
    assert dependencies.versionProblem((5, 10, 0), (3, 9, 0)) is not None
    calls = []
    with pytest.raises(dependencies.EnhanceError, match="needs 3D Slicer 5.10"):
        dependencies.installBackend(calls.append, installTorch=lambda: calls.append("torch"),
                                    slicerVersion=(5, 8, 1), pythonVersion=(3, 9, 10))
    assert calls == []  # neither torch nor any package was downloaded


@pytest.mark.slow
def test_two_patients_two_runs_each_every_result_named_filed_and_its_own(world, thick_volume, logic, tmp_path):
    """The issue's re-run scenario: per patient a run with segmentation, then one without into a new node;
    afterwards every node's name, folder, input, segmentations and voxels are right."""
    import numpy as np
    import SimpleITK as sitk
    from slicer.util import arrayFromVolume

    other = sitk.ReadImage(str(thick_volume))
    flipped = sitk.Flip(other, [True, False, False])  # patient B: a different head, same geometry
    pathB = tmp_path / "patientB.nii.gz"
    sitk.WriteImage(flipped, str(pathB))
    patients = {"A": world.loadVolume(thick_volume, "Patient A T1"), "B": world.loadVolume(pathB, "Patient B T1")}
    folders = {name: world.inStudyFolder(node, f"Patient {name}") for name, node in patients.items()}
    results = {}
    for name, node in patients.items():
        results[name, "bspline"] = logic.enhance(node, method="bspline", segment=True, targetSpacing=(2.0, 2.0, 2.0))
        results[name, "linear"] = logic.enhance(node, method="linear", targetSpacing=(2.0, 2.0, 2.0))
    assert len({id(node) for node in results.values()}) == 4  # no run overwrote another
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(world.scene)
    for (name, method), output in results.items():
        assert output.GetScene() is world.scene and output.GetName() == f"Patient {name} T1 enhanced ({method})"
        assert shNode.GetItemParent(shNode.GetItemByDataNode(output)) == folders[name]
        assert output.GetNodeReference("MRISuperResolution.Input") is patients[name]
        segmented = all(node is not None for node in logic.segmentationNodes(output))
        assert segmented == (method == "bspline") and (logic.tissueTable(output) is not None) == segmented
        interpolated = arrayFromVolume(output.GetNodeReference("MRISuperResolution.Interpolated")).astype(float)
        values = arrayFromVolume(output).astype(float)
        own = np.corrcoef(values.ravel(), interpolated.ravel())[0, 1]
        other_name = "B" if name == "A" else "A"
        others = arrayFromVolume(results[other_name, method]).astype(float)
        assert own > 0.98 and own > np.corrcoef(values.ravel(), others.ravel())[0, 1] + 0.05, (name, method)
