"""The in-Slicer self-test (MRISuperResolutionTest runs MRISuperResolutionLib.selftest) never passes by
testing nothing: without a backend it still checks the difference map and the layout and says what it
skipped; with the backend it runs B-spline (no torch needed) and, with torch, a learned method."""

from __future__ import annotations

import ast
import sys

import pytest
pytest.importorskip("slicer", reason="slicer-core is not installed")
from mrisr_slicer_testing import REPO  # noqa: E402

from MRISuperResolutionLib import dependencies, selftest  # noqa: E402


def test_with_the_backend_everything_runs(world, logic):
    said = []
    report = selftest.runSelfTest(logic, dependencies.probeBackend(sys.executable), say=said.append)
    assert report.ran[:3] == ["difference map", "layout", "B-spline through the backend"]
    assert report.ran[3].startswith("learned method (") and report.skipped == []
    enhanced = [world.scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode").GetName()
                for i in range(world.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
    assert "self-test ball enhanced (bspline)" in enhanced
    assert said[-1].endswith("ran: " + ", ".join(report.ran))


def test_without_a_backend_it_runs_what_needs_none_and_says_what_it_skipped(world, logic, tmp_path):
    logic.pythonExecutable = str(tmp_path / "no-such-python")
    said = []
    report = selftest.runSelfTest(logic, say=said.append)
    assert report.ran == ["difference map", "layout"]
    assert [part for part, _ in report.skipped] == ["B-spline through the backend", "learned method"]
    assert all("cannot run" in why for _, why in report.skipped)
    assert any("skipped B-spline through the backend" in line for line in said)
    assert "skipped learned method" in report.summary()


def test_a_wrong_result_fails_the_self_test(world, logic, monkeypatch):
    from MRISuperResolutionLib import difference

    monkeypatch.setattr(difference, "differenceArray", lambda enhanced, interpolated: interpolated - enhanced)
    with pytest.raises(selftest.SelfTestFailure, match="not enhanced − interpolated"):
        selftest.runSelfTest(logic, dependencies.BackendStatus("none"))


def test_the_modules_test_class_runs_the_lib_self_test_and_asserts_it_ran_something():
    tree = ast.parse((REPO / "MRISuperResolution" / "MRISuperResolution.py").read_text(encoding="utf-8"))
    test_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MRISuperResolutionTest")
    method = next(n for n in test_class.body if isinstance(n, ast.FunctionDef) and n.name == "test_SelfTest")
    assert "selftest.runSelfTest(" in ast.unparse(method)
    assert not any(isinstance(node, ast.Return) for node in ast.walk(method))  # no early way out
    assert "test_SelfTest" in ast.unparse(next(n for n in test_class.body if getattr(n, "name", "") == "runTest"))
