"""CLI startup imports only what a command needs: listing methods, planning and interpolating import
neither torch nor `resource` (absent on Windows), and benchmarks are listed without importing them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.evaluation import benchmarks

PROBE = """
import json, sys
from mrisr.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""
HEAVY = ("torch", "resource")


def loaded_modules(*args: str) -> tuple[int, set[str], str]:
    """Run the CLI in a fresh interpreter; its exit code, the modules it had loaded, and its stdout."""
    run = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300)
    report = json.loads(run.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"]), run.stdout


@pytest.fixture(scope="module")
def small_volume(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imports")
    image = sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 100, (6, 16, 16)).astype(np.float32))
    image.SetSpacing((1.0, 1.0, 4.0))
    sitk.WriteImage(image, str(folder / "in.nii.gz"))
    return folder


@pytest.mark.parametrize("command", [
    ["methods"],
    ["methods", "--json"],
    ["plan", "{in}", "--method", "diffusioniqt", "--json"],
    ["enhance", "{in}", "{out}", "--method", "bspline", "--back-projection", "1", "--write-interpolated", "{interp}"],
])
def test_light_commands_import_neither_torch_nor_resource(small_volume, command):
    names = {"in": small_volume / "in.nii.gz", "out": small_volume / "out.nii.gz",
             "interp": small_volume / "interp.nii.gz"}
    code, modules, _ = loaded_modules(*(part.format(**names) for part in command))
    assert code == 0
    assert "mrisr.cli" in modules and "SimpleITK" in modules  # the probe does see what was imported
    assert not set(HEAVY) & modules, set(HEAVY) & modules



def test_the_server_client_needs_no_torch(small_volume):
    """`enhance --server` is only a client: a workstation without torch can use a GPU server (here an
    unreachable one, so the client fails with its one-line error after the imports it needs)."""
    code, modules, _ = loaded_modules("enhance", str(small_volume / "in.nii.gz"), str(small_volume / "remote.nii.gz"),
                                      "--method", "bspline", "--server", "http://127.0.0.1:9", "--token", "t")
    assert code == 2 and "mrisr.server.client" in modules
    assert not set(HEAVY) & modules, set(HEAVY) & modules

def test_benchmarks_are_listed_from_their_docstrings_without_importing_them():
    code, modules, stdout = loaded_modules("bench", "--help")
    assert code is None or code == 0
    listed = benchmarks.available()
    assert set(listed) == {p.stem for p in benchmarks.FOLDER.glob("*.py") if not p.name.startswith("_")}
    for name, summary in listed.items():
        assert name in stdout and summary
        assert f"mrisr.evaluation.benchmarks.{name}" not in modules
    assert not set(HEAVY) & modules


def test_a_benchmark_dropped_into_the_folder_is_picked_up(tmp_path, monkeypatch):
    (tmp_path / "server.py").write_text('"""Requests per second of the server.\n\nMore text."""\nimport torch\n')
    (tmp_path / "_helpers.py").write_text('"""Not a benchmark."""\n')
    monkeypatch.setattr(benchmarks, "FOLDER", tmp_path)
    assert benchmarks.available() == {"server": "Requests per second of the server."}
