"""The "low-field sample" of Slicer's Sample Data module, made offline by the backend.

`mrisr demo FOLDER` degrades the MNI152 template shipped with nilearn into a low-field, thick-slice
volume (`lr.nii.gz`; the 1 mm template it came from is `hr.nii.gz`) and enhances it. The sample is
made once into a cache folder (under a temporary name, renamed when complete, so a cancelled or failed
run is never reused) and loaded from there afterwards; nothing is downloaded.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

import slicer

from .dependencies import backendEnvironment
from .parameters import EnhanceError, MethodCatalog
from .process import BackendProcess, backendCommand

log = logging.getLogger(__name__)

SAMPLE_NAME = "MRISRLowFieldSample"  # the Sample Data module's name of the sample
SAMPLE_TITLE = "Low-field sample"
SAMPLE_CATEGORY = "MRI Super-Resolution"
SAMPLE_FOLDER = "MRISuperResolution-low-field-sample"
LOW_FIELD_FILE = "lr.nii.gz"  # what `mrisr demo` writes
REFERENCE_FILE = "hr.nii.gz"
DEMO_OUTPUT_FILE = "enhanced.nii.gz"  # the demo's own enhancement: not kept
NODE_NAME = "Low-field sample"


def fastestMethod(catalog: Optional[MethodCatalog]) -> Optional[str]:
    """The method with the lowest measured CPU rate (the demo also enhances its sample; that part is not
    kept, so it should take as little time as possible); None: the backend's default."""
    if catalog is None:
        return None
    rated = [(float((m.config.get("seconds_per_megavoxel") or {}).get("cpu", float("inf"))), m.name)
             for m in catalog.methods if not m.needsReference]
    return min(rated)[1] if rated and min(rated)[0] != float("inf") else None


def sampleCommand(pythonExecutable: Optional[str], folder: str, method: Optional[str] = None) -> list[str]:
    command = backendCommand(pythonExecutable) + ["demo", folder]
    return command + (["--method", method] if method else [])


def missingExtra(message: str) -> Optional[str]:
    """The backend extra a failure asks for (`… needs the "eval" extra …`), or None."""
    match = re.search(r'needs the "(\w+)" extra', message)
    return match.group(1) if match else None


def cachedSample(cacheDir: str) -> Optional[Path]:
    """The low-field sample file if it was made before, else None."""
    path = Path(cacheDir) / SAMPLE_FOLDER / LOW_FIELD_FILE
    return path if path.is_file() else None


def makeLowFieldSample(pythonExecutable: Optional[str], cacheDir: str, catalog: Optional[MethodCatalog] = None,
                       idle: Optional[Callable[[], None]] = None, timeout: float = 900.0,
                       onProgress: Optional[Callable[[float, str], None]] = None) -> Path:
    """The low-field sample volume file, made by the backend (`mrisr demo`) into `cacheDir` unless it is
    there already. Blocks, calling `idle` between polls (Slicer: processEvents) and `onProgress(fraction,
    text)` on progress; EnhanceError with the backend's message when it fails."""
    existing = cachedSample(cacheDir)
    if existing is not None:
        return existing
    final = Path(cacheDir) / SAMPLE_FOLDER
    partial = Path(cacheDir) / (SAMPLE_FOLDER + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    Path(cacheDir).mkdir(parents=True, exist_ok=True)
    python = pythonExecutable
    process = BackendProcess(sampleCommand(python, str(partial), fastestMethod(catalog)),
                             env=backendEnvironment(python))
    try:
        process.start()
    except FileNotFoundError as exc:
        raise EnhanceError(str(exc)) from None
    deadline = time.monotonic() + timeout
    try:
        while not process.finished:
            for update in process.poll():
                if onProgress is not None:
                    onProgress(update.overallFraction, update.text())
            if time.monotonic() > deadline:
                process.cancel()
                raise EnhanceError(f"the backend did not make the sample within {timeout:g} s and was stopped")
            if idle is not None:
                idle()
            time.sleep(0.05)
        if process.returncode != 0:
            log.error("mrisr demo failed:\n%s", process.stderrText())
            raise EnhanceError(f"the low-field sample could not be made: {process.errorMessage()}")
        (partial / DEMO_OUTPUT_FILE).unlink(missing_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return final / LOW_FIELD_FILE


def loadLowFieldSample(volumesLogic, path: Path, name: str = NODE_NAME):
    """Load the sample file with Slicer's volumes logic (its real reader) as a scalar volume node."""
    node = volumesLogic.AddArchetypeVolume(str(path), name, 0)
    if node is None:
        raise EnhanceError(f"Slicer could not read the low-field sample {path}")
    return node


def defaultCacheDir(scene=None) -> Optional[str]:
    """The scene's remote cache folder, where Sample Data keeps its downloads (None outside Slicer)."""
    scene = scene or slicer.mrmlScene
    manager = scene.GetCacheManager() if scene is not None else None
    folder = manager.GetRemoteCacheDirectory() if manager is not None else None
    return folder or None
