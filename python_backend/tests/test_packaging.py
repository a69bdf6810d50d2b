"""What Slicer installs: the runtime wheel carries the methods' weights and registry, not the evaluation
extras (LPIPS weights, nilearn), and declares only runtime dependencies unconditionally."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

BACKEND = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The backend's wheel, built from a copy so that the build leaves nothing in the source tree."""
    source = tmp_path_factory.mktemp("backend")
    shutil.copy(BACKEND / "pyproject.toml", source)
    shutil.copy(BACKEND / "README.md", source)
    shutil.copytree(BACKEND / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(source)], check=True, capture_output=True)
    return zipfile.ZipFile(next(out.glob("mrisr-*.whl")))


def test_runtime_wheel_ships_every_method_card_and_weights_but_not_lpips(wheel):
    names = set(wheel.namelist())
    shipped = sorted(p.name for p in (BACKEND / "src/mrisr/weights").iterdir() if "_cpu." in p.name)
    assert len(shipped) >= 12 and all(f"mrisr/weights/{n}" in names for n in shipped)
    assert {f"mrisr/registry/{p.name}" for p in (BACKEND / "src/mrisr/registry").glob("*.json")} <= names
    assert not [n for n in names if "lpips" in n]


def test_runtime_requirements_leave_evaluation_packages_to_extras(wheel):
    metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    requires = [line.split(":", 1)[1].strip() for line in wheel.read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist:")]
    runtime = {r.split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
               for r in requires if "extra ==" not in r}
    assert runtime == {"torch", "numpy", "scipy", "simpleitk", "nibabel", "safetensors", "tqdm"}
    assert any(r.startswith("nilearn") and 'extra == "eval"' in r for r in requires)
    assert any(r.startswith("fastapi") and 'extra == "server"' in r for r in requires)
