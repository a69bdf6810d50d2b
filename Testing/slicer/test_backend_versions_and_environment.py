"""Versions and environment of the backend's interpreter: torch's minimum and the backend's version are
the bundled backend's (its pyproject.toml), an outdated backend is offered a reinstall, pip's output
comes line by line, and an external "Backend Python" never gets the Slicer launcher's PYTHONHOME /
PYTHONPATH (a leaked PYTHONHOME stops a conda/venv Python from starting at all)."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
pytest.importorskip("slicer", reason="slicer-core is not installed")
from mrisr_slicer_testing import REPO  # noqa: E402

from MRISuperResolutionLib import EnhanceError, dependencies  # noqa: E402

pytestmark = pytest.mark.skipif(os.name == "nt", reason="uses POSIX shell scripts as interpreters")


def bundled_source(folder: Path, version: str = "0.1.0", torch: str = "torch>=2.2,<2.14") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(textwrap.dedent(f"""
        [project]
        name = "mrisr"
        version = "{version}"
        dependencies = ["{torch}", "numpy>=1.24"]
        [project.optional-dependencies]
        eval = ["nilearn>=0.10"]
        """), encoding="utf-8")
    return folder


def external_python(folder: Path) -> str:
    """Another interpreter than this one (as a conda Python would be): a script that runs this venv's Python."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "python"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    script.chmod(0o755)
    return str(script)


def test_the_bundled_backend_is_read_from_its_pyproject():
    import tomllib

    project = tomllib.loads((REPO / "python_backend" / "pyproject.toml").read_text())["project"]
    bundled = dependencies.bundledBackend(REPO / "python_backend")
    assert bundled.version == project["version"]
    torch = next(r for r in project["dependencies"] if r.startswith("torch"))
    assert bundled.torchRequirement == torch[len("torch"):] and torch.startswith(f"torch>={bundled.torchMinimum}")
    assert bundled.extras["eval"] == tuple(project["optional-dependencies"]["eval"])
    assert dependencies.versionTuple("2.13.0+cpu") == (2, 13, 0) and dependencies.versionTuple("2.2rc1") == (2, 2)


def test_the_installed_backend_matches_the_bundled_one():
    status = dependencies.probeBackend(sys.executable)
    assert status.ready and not status.backendOutdated and status.torchProblem is None
    assert status.bundled.version == status.mrisrVersion


def test_another_backend_version_is_offered_a_reinstall(tmp_path, monkeypatch):
    monkeypatch.setenv("MRISR_BACKEND_SOURCE", str(bundled_source(tmp_path / "newer", version="9.9.9")))
    status = dependencies.probeBackend(sys.executable)
    assert status.backendOutdated and status.ready  # it still runs, but the panel offers the update
    assert f"mrisr {status.mrisrVersion}" in status.summary() and "ships 9.9.9" in status.summary()
    calls = []
    dependencies.installBackend(calls.append, reinstall=True)
    assert calls[-1] == ["--no-deps", "--force-reinstall", str(tmp_path / "newer")]


def test_a_torch_older_than_the_backend_needs_is_a_problem(tmp_path, monkeypatch):
    monkeypatch.setenv("MRISR_BACKEND_SOURCE", str(bundled_source(tmp_path / "future", torch="torch>=99.1")))
    status = dependencies.probeBackend(sys.executable)
    assert not status.ready and status.torchVersion
    assert f"PyTorch {status.torchVersion} is older than the backend needs (99.1 or later)" in status.summary()


def test_pip_output_arrives_line_by_line_and_a_failure_quotes_pip():
    lines = []
    output = dependencies.runPip(sys.executable, ["--no-index", "--no-deps", "pip"], onLine=lines.append)
    assert lines == output and any("already satisfied" in line for line in lines)
    lines.clear()
    with pytest.raises(EnhanceError, match="pip install failed: .*no-such-package-mrisr"):
        dependencies.runPip(sys.executable, ["--no-index", "no-such-package-mrisr"], onLine=lines.append)
    assert any("no-such-package-mrisr" in line for line in lines)


def test_an_external_python_gets_no_launcher_variables(tmp_path, monkeypatch, world, logic, thick_volume):
    python = external_python(tmp_path / "conda" / "bin")
    inputNode = world.loadVolume(thick_volume, "T1")
    assert dependencies.isExternalPython(python) and not dependencies.isExternalPython(sys.executable)
    monkeypatch.setenv("PYTHONHOME", str(tmp_path / "Slicer" / "lib" / "Python"))  # as the Slicer launcher sets them
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "Slicer" / "lib" / "Python" / "site-packages"))
    env = dependencies.backendEnvironment(python)
    assert "PYTHONHOME" not in env and "PYTHONPATH" not in env and env["PATH"] == os.environ["PATH"]
    assert dependencies.backendEnvironment(sys.executable)["PYTHONHOME"] == os.environ["PYTHONHOME"]  # Slicer's own
    status = dependencies.probeBackend(python)  # with PYTHONHOME leaked, this Python could not even start
    assert status.ready, status.summary()
    logic.pythonExecutable = python
    logic.setMethodCatalog(dependencies.loadCatalog(python))
    output = logic.enhance(inputNode, method="nearest")
    assert output.GetImageData() is not None


def test_slicers_startup_environment_is_preferred(tmp_path, monkeypatch):
    python = external_python(tmp_path / "venv" / "bin")
    startup = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MARK": "before the launcher"}
    monkeypatch.setattr(dependencies, "startupEnvironment", lambda: dict(startup))
    monkeypatch.setenv("PYTHONPATH", "/launcher/path")
    env = dependencies.backendEnvironment(python)
    assert env["MARK"] == "before the launcher" and "PYTHONPATH" not in env
    assert dependencies.probeBackend(python).ready


def test_an_extra_is_installed_from_the_bundled_backend_under_slicers_pins(tmp_path, monkeypatch):
    import tomllib

    from MRISuperResolutionLib import sampledata

    calls = []

    def pipInstall(args):
        calls.append((args, Path(args[args.index("-c") + 1]).read_text()))

    installed = dependencies.installExtra(pipInstall, "eval")
    project = tomllib.loads((REPO / "python_backend" / "pyproject.toml").read_text())["project"]
    assert installed == project["optional-dependencies"]["eval"]
    (args, constraints), = calls
    assert args[:len(installed)] == installed and "numpy==" in constraints and "SimpleITK==" in constraints
    with pytest.raises(EnhanceError, match="no 'gpu' extra"):
        dependencies.installExtra(pipInstall, "gpu")
    # the backend's own message when the template's package is missing names the extra to install
    from mrisr.errors import MRISRError
    from mrisr.simulation import template

    monkeypatch.setattr(template.resources, "files", lambda name: (_ for _ in ()).throw(ModuleNotFoundError(name)))
    with pytest.raises(MRISRError) as missing:
        template.mni_path()
    assert sampledata.missingExtra(str(missing.value)) == "eval"
    assert sampledata.missingExtra("input is 2D: use a 3D volume") is None
