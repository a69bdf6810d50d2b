"""The extension's files: CMake lists match the files on disk, metadata and icons are there, the
requirements follow the backend's, and the Lib imports without Qt (as slicer-core has none)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib

import pytest
from pathlib import Path

PIL = pytest.importorskip("PIL.Image")
REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "MRISuperResolution"


def cmake_list(text: str, variable: str) -> set[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not set"
    return {item.replace("${MODULE_NAME}", "MRISuperResolution") for item in match.group(1).split()}


def test_module_cmake_lists_every_script_and_resource_on_disk():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    scripts = {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*.py")
               if "Testing" not in p.parts and "__pycache__" not in p.parts}
    resources = {p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()}
    assert cmake_list(text, "MODULE_PYTHON_SCRIPTS") == scripts
    assert cmake_list(text, "MODULE_PYTHON_RESOURCES") == resources
    assert "slicerMacroBuildScriptedModule(" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert "add_subdirectory(Testing)" in text
    assert (MODULE_DIR / "Testing" / "CMakeLists.txt").read_text().strip() == "add_subdirectory(Python)"
    assert (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").is_file()


def test_top_level_cmake_is_a_slicer_extension_depending_on_pytorch():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"\)', text), key
    for line in ("set(EXTENSION_DEPENDS PyTorch)", "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                 "add_subdirectory(MRISuperResolution)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                 "include(${Slicer_EXTENSION_CPACK})"):
        assert line in text, line
    assert text.index("include(${Slicer_USE_FILE})") < text.index("add_subdirectory(MRISuperResolution)")


@pytest.mark.parametrize("path", ["MRISuperResolution.png", "MRISuperResolution/Resources/Icons/MRISuperResolution.png",
                                  "Resources/Icons/MRISuperResolution.png"])
def test_icons_are_128_pixel_pngs(path):
    with PIL.open(REPO / path) as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)


def test_requirements_follow_the_backend_without_torch_or_simpleitk():
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    from MRISuperResolutionLib.dependencies import REQUIREMENTS_FILE, backendSourceDir, readRequirements

    project = tomllib.loads((REPO / "python_backend" / "pyproject.toml").read_text(encoding="utf-8"))
    backend = {re.split(r"[<>=!~ ]", dep)[0].lower(): dep.replace(" ", "") for dep in project["project"]["dependencies"]}
    required = {re.split(r"[<>=!~ ]", dep)[0].lower(): dep.replace(" ", "") for dep in readRequirements(REQUIREMENTS_FILE)}
    assert not {"torch", "simpleitk"} & set(required)  # PyTorch extension / Slicer's own SimpleITK
    assert set(backend) - set(required) == {"torch", "simpleitk"}
    for name, spec in required.items():
        assert backend[name] == spec, name
    assert backendSourceDir() == REPO / "python_backend"
    from MRISuperResolutionLib.dependencies import bundledBackend

    # what the PyTorch extension is asked to install: read from the bundled backend, never copied
    assert "torch" + bundledBackend().torchRequirement == backend["torch"]
    module = (MODULE_DIR / "MRISuperResolution.py").read_text(encoding="utf-8")
    assert "torchVersionRequirement=requirement" in module and "TORCH_REQUIREMENT" not in module


def test_lib_imports_without_qt():
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import MRISuperResolutionLib, MRISuperResolutionLib.logic, MRISuperResolutionLib.dependencies, "
            "MRISuperResolutionLib.estimates, MRISuperResolutionLib.layout; "
            "qt = [m for m in ('qt', 'ctk', 'PySide6', 'PyQt5', 'PythonQt', 'torch') if m in sys.modules]; "
            "print(qt); sys.exit(1 if qt else 0)")
    result = subprocess.run([sys.executable, "-c", code, str(MODULE_DIR)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_module_script_compiles_and_its_lib_imports_exist():
    import importlib

    pytest.importorskip("slicer", reason="slicer-core is not installed")

    source = (MODULE_DIR / "MRISuperResolution.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    compile(source, "MRISuperResolution.py", "exec")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("MRISuperResolutionLib"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), alias.name
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"MRISuperResolution", "MRISuperResolutionWidget", "MRISuperResolutionLogic", "MRISuperResolutionTest"} <= classes
    assert "import imp\n" not in source and "pip_install(" not in source.split("def installDependencies")[0]


def test_license_is_the_apache_license_the_backend_declares():
    project = tomllib.loads((REPO / "python_backend" / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == {"text": "Apache-2.0"}
    text = (REPO / "LICENSE.txt").read_text(encoding="utf-8")
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"] and "END OF TERMS AND CONDITIONS" in text


def test_no_wheels_or_other_binaries_are_kept_in_the_tests():
    assert [p.name for p in (REPO / "Testing").rglob("*.whl")] == []
