"""Is the backend usable from a given Python, and how to install it into Slicer's Python.

Nothing is checked or installed at import time. Installing is: torch through the PyTorch extension
(the caller passes its installer), then the packages of Resources/requirements.txt, then the backend
itself with --no-deps, all under a constraints file that pins the numpy and SimpleITK Slicer ships.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional, Sequence

from .parameters import EnhanceError, MethodCatalog, RunPlan
from .process import BackendProcess, defaultPythonExecutable, errorMessage

log = logging.getLogger(__name__)

MINIMUM_SLICER = (5, 10)  # the first Slicer with a Python the backend runs on
MINIMUM_PYTHON = (3, 10)  # python_backend/pyproject.toml requires-python
TOKEN_ENVIRONMENT = "MRISR_SERVER_TOKEN"  # how the backend's server client gets its token (never argv)

MODULE_DIR = Path(__file__).resolve().parent.parent
REQUIREMENTS_FILE = MODULE_DIR / "Resources" / "requirements.txt"
BACKEND_FOLDER_NAME = "MRISuperResolutionBackend"
PROTECTED_PACKAGES = ("numpy", "SimpleITK")

PROBE_SCRIPT = r"""
import json, sys
report = {"python": sys.version.split()[0]}
try:
    import mrisr
    from mrisr.plan import catalog
    report["mrisr"] = getattr(mrisr, "__version__", "installed")
    report["registry"] = catalog()
except Exception as exc:
    report["mrisr_error"] = f"{type(exc).__name__}: {exc}"
try:
    import torch
    report["torch"] = torch.__version__
    cuda = torch.cuda.is_available()
    report["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
except Exception as exc:
    report["torch_error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(report))
"""


# Asks a `mrisr serve` server for GET /v1/methods through the backend's own client (Slicer never imports
# mrisr); the token comes from the environment so that it never shows in a process list.
SERVER_PROBE_SCRIPT = r"""
import json, os, sys
from mrisr.errors import MRISRError
try:
    from mrisr.server.client import ServerClient
    with ServerClient(sys.argv[1], os.environ.get("MRISR_SERVER_TOKEN", ""), timeout=float(sys.argv[2])) as client:
        print(json.dumps(client.methods()))
except ImportError as exc:
    sys.exit(f"mrisr: error: the backend's server client needs httpx ({exc}): pip install 'mrisr[server]'")
except MRISRError as exc:
    sys.exit(f"mrisr: error: {exc}")
"""



LAUNCHER_VARIABLES = ("PYTHONHOME", "PYTHONPATH")  # set by Slicer's launcher for its own Python


def startupEnvironment() -> Optional[dict]:
    """The environment Slicer was started with, before its launcher set its own variables
    (`slicer.util.startupEnvironment()`); None outside the Slicer application."""
    try:
        import slicer.util

        return dict(slicer.util.startupEnvironment())
    except Exception:  # slicer-core has no application; older or embedded Pythons have no such function
        return None


def isExternalPython(pythonExecutable: Optional[str]) -> bool:
    """Whether `pythonExecutable` is another interpreter than Slicer's own (PythonSlicer or this process's
    Python), e.g. a conda or venv Python chosen under Advanced → Backend Python."""
    if not pythonExecutable:
        return False
    own = {shutil.which("PythonSlicer"), sys.executable}
    return os.path.realpath(pythonExecutable) not in {os.path.realpath(p) for p in own if p}


def cleanEnvironment() -> dict:
    """The environment for an external interpreter: Slicer's startup environment when the application can
    give it, else this process's without the launcher's Python variables, which would make a conda/venv
    Python load Slicer's standard library and packages."""
    env = startupEnvironment()
    if env is None:
        env = {name: value for name, value in os.environ.items() if name not in LAUNCHER_VARIABLES}
    return env


def backendEnvironment(pythonExecutable: Optional[str] = None) -> dict:
    """The environment a backend process of `pythonExecutable` gets: this process's for Slicer's own Python,
    a clean one for an external interpreter; text streams in UTF-8 (its messages use × and –; Slicer may run
    under the C locale, and Windows pipes default to the ANSI code page)."""
    env = cleanEnvironment() if isExternalPython(pythonExecutable) else dict(os.environ)
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


def versionProblem(slicerVersion: tuple[int, ...], pythonVersion: Sequence[int]) -> Optional[str]:
    """Why this Slicer cannot run the backend (one line, what to do), or None when it can."""
    if tuple(slicerVersion[:2]) >= MINIMUM_SLICER and tuple(pythonVersion[:2]) >= MINIMUM_PYTHON:
        return None
    have = ".".join(str(v) for v in slicerVersion)
    python = ".".join(str(v) for v in pythonVersion[:3])
    return (f"MRISuperResolution needs 3D Slicer {MINIMUM_SLICER[0]}.{MINIMUM_SLICER[1]} or later (Python "
            f"{MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]}+); this is Slicer {have} with Python {python}: install a current "
            "Slicer from download.slicer.org (nothing was downloaded)")


@dataclass(frozen=True)
class ServerInfo:
    """What a `mrisr serve` server answered to GET /v1/methods: its methods, device, GPUs and limits."""

    url: str
    device: str
    workers: int
    gpus: tuple[dict, ...]
    catalog: MethodCatalog

    @classmethod
    def fromDocument(cls, url: str, document: dict) -> "ServerInfo":
        server = document.get("server") or {}
        return cls(url, str(server.get("device", "cpu")), int(server.get("workers", 1)),
                   tuple(server.get("gpus") or ()), MethodCatalog.fromRegistry(document))

    def summary(self) -> str:
        """One line for the panel: device and GPUs (free memory), workers and the methods offered."""
        if self.gpus:
            where = ", ".join(f"{gpu.get('name', gpu.get('device'))} ({gpu.get('free_mib', 0) / 1024:.0f} of "
                              f"{gpu.get('total_mib', 0) / 1024:.0f} GiB free)" for gpu in self.gpus)
        else:
            where = "CPU only" if self.device == "cpu" else self.device
        return f"{where}; {self.workers} worker(s); methods: {', '.join(self.catalog.names)}"


def probeServer(pythonExecutable: Optional[str], url: str, token: Optional[str], timeout: float = 30.0) -> ServerInfo:
    """Test the connection to a server (the backend's Python runs its client); EnhanceError with the
    client's one-line message (unreachable, refused token, …) when it fails."""
    python = pythonExecutable or defaultPythonExecutable()
    if not url or not url.strip():
        raise EnhanceError("no server URL given: enter the address `mrisr serve` printed, e.g. http://gpu.example:8765")
    env = backendEnvironment(python)
    if token:
        env[TOKEN_ENVIRONMENT] = token
    try:
        completed = subprocess.run([python, "-c", SERVER_PROBE_SCRIPT, url.strip(), str(timeout)], capture_output=True,
                                   text=True, encoding="utf-8", errors="replace", timeout=timeout + 30,
                                   stdin=subprocess.DEVNULL, env=env)
    except OSError as exc:
        raise EnhanceError(f"cannot start the backend with {python!r}: {exc.strerror or exc}") from None
    except subprocess.TimeoutExpired:
        raise EnhanceError(f"the server at {url} did not answer within {timeout:g} s: check the URL and the network") from None
    if completed.returncode != 0 or not completed.stdout.lstrip().startswith("{"):
        raise EnhanceError(errorMessage(completed.stderr.splitlines(), completed.returncode))
    return ServerInfo.fromDocument(url.strip(), json.loads(completed.stdout))


def versionTuple(version: str) -> tuple[int, ...]:
    """(2, 13, 0) for "2.13.0+cpu" or "2.13.0rc1": the leading numeric release components."""
    numbers = []
    for part in version.split("+", 1)[0].split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits.group()))
        if digits.group() != part:
            break
    return tuple(numbers)


@dataclass(frozen=True)
class BundledBackend:
    """What the backend this module ships declares in its pyproject.toml (read, never copied)."""

    version: Optional[str]
    requirements: tuple[str, ...]
    extras: dict

    @property
    def torchRequirement(self) -> Optional[str]:
        """The version specifier of torch, e.g. ">=2.2,<2.14" (for the PyTorch extension's installer)."""
        for requirement in self.requirements:
            match = re.match(r"^\s*torch\s*([<>=!~].*)?$", requirement)
            if match:
                return (match.group(1) or "").strip() or None
        return None

    @property
    def torchMinimum(self) -> Optional[str]:
        match = re.search(r">=\s*([\w.]+)", self.torchRequirement or "")
        return match.group(1) if match else None


def bundledBackend(source: Optional[Path] = None) -> Optional[BundledBackend]:
    """The bundled backend's version, requirements and extras from its pyproject.toml (None when not found)."""
    source = source or backendSourceDir()
    if source is None:
        return None
    try:
        import tomllib
    except ImportError:  # Python < 3.11: no TOML reader in the standard library
        return None
    try:
        project = tomllib.loads((Path(source) / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    except (OSError, ValueError):
        return None
    return BundledBackend(project.get("version"), tuple(project.get("dependencies", ())),
                          {name: tuple(items) for name, items in project.get("optional-dependencies", {}).items()})


@dataclass(frozen=True)
class BackendStatus:
    """What one Python interpreter offers: the backend, torch and the CUDA GPUs."""

    pythonExecutable: str
    mrisrVersion: Optional[str] = None
    torchVersion: Optional[str] = None
    cudaDevices: tuple[str, ...] = ()
    catalog: Optional[MethodCatalog] = None
    problems: tuple[str, ...] = field(default_factory=tuple)
    bundled: Optional[BundledBackend] = None  # the backend this module ships (None: its source was not found)

    @property
    def torchProblem(self) -> Optional[str]:
        """Why the installed torch is too old for the bundled backend (None when it is not, or unknown)."""
        minimum = self.bundled.torchMinimum if self.bundled is not None else None
        if self.torchVersion is None or minimum is None or versionTuple(self.torchVersion) >= versionTuple(minimum):
            return None
        return (f"PyTorch {self.torchVersion} is older than the backend needs ({minimum} or later): update it "
                "(Install dependencies, or the PyTorch extension)")

    @property
    def backendOutdated(self) -> bool:
        """The installed backend is another version than the one this module ships: reinstall it."""
        return (self.mrisrVersion is not None and self.bundled is not None and self.bundled.version is not None
                and self.mrisrVersion != self.bundled.version)

    @property
    def ready(self) -> bool:
        return (self.mrisrVersion is not None and self.torchVersion is not None and self.catalog is not None
                and self.torchProblem is None)

    def deviceChoices(self) -> list[tuple[str, str]]:
        """(label, --device value) pairs: auto, CPU and each CUDA GPU."""
        choices = [("auto (GPU if available)", "auto"), ("CPU", "cpu")]
        choices += [(f"GPU {i}: {name}", f"cuda:{i}") for i, name in enumerate(self.cudaDevices)]
        return choices

    def summary(self) -> str:
        problems = list(self.problems) + ([self.torchProblem] if self.torchProblem else [])
        if self.backendOutdated:
            problems.append(f"the installed backend is mrisr {self.mrisrVersion}, this module ships "
                            f"{self.bundled.version}: update it")
        if not self.ready:
            return "; ".join(problems) or "backend not checked yet"
        gpus = f"{len(self.cudaDevices)} CUDA GPU(s)" if self.cudaDevices else "no CUDA GPU"
        return "; ".join([f"mrisr {self.mrisrVersion}, torch {self.torchVersion}, {gpus}", *problems])


def probeCommand(pythonExecutable: Optional[str] = None) -> list[str]:
    return [pythonExecutable or defaultPythonExecutable(), "-c", PROBE_SCRIPT]


def startProbe(pythonExecutable: Optional[str] = None) -> BackendProcess:
    """Start the probe in the background (for a panel that must stay responsive); see statusFromProbe."""
    try:
        return BackendProcess(probeCommand(pythonExecutable), env=backendEnvironment(pythonExecutable)).start()
    except FileNotFoundError as exc:
        return _FailedStart(str(exc))


def statusFromProbe(pythonExecutable: Optional[str], process: BackendProcess) -> BackendStatus:
    """The status a finished probe process reported."""
    python = pythonExecutable or defaultPythonExecutable()
    return parseProbeOutput(python, process.returncode, process.stdoutLines, process.stderrLines)


def probeBackend(pythonExecutable: Optional[str] = None, timeout: float = 180.0) -> BackendStatus:
    """Run a short script in the backend's interpreter and report what it found (takes a few seconds)."""
    python = pythonExecutable or defaultPythonExecutable()
    try:
        completed = subprocess.run(probeCommand(python), capture_output=True, text=True, encoding="utf-8",
                                   errors="replace", timeout=timeout, stdin=subprocess.DEVNULL,
                                   env=backendEnvironment(python))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return BackendStatus(python, problems=(f"cannot run the Python interpreter {python!r}: {exc}",))
    return parseProbeOutput(python, completed.returncode, completed.stdout.splitlines(), completed.stderr.splitlines())


def parseProbeOutput(python: str, returncode: Optional[int], stdoutLines: Sequence[str],
                     stderrLines: Sequence[str]) -> BackendStatus:
    reports = [line for line in stdoutLines if line.startswith("{")]
    if returncode != 0 or not reports:
        tail = ([line for line in stderrLines if line.strip()] or ["no output"])[-1]
        return BackendStatus(python, problems=(f"{python} failed to start: {tail}",))
    report = json.loads(reports[-1])
    problems = []
    if "mrisr_error" in report:
        problems.append(f"the mrisr backend is not installed in {python} ({report['mrisr_error']})")
    if "torch_error" in report:
        problems.append(f"PyTorch is not installed in {python} ({report['torch_error']})")
    catalog = MethodCatalog.fromRegistry(report["registry"]) if "registry" in report else None
    return BackendStatus(python, report.get("mrisr"), report.get("torch"), tuple(report.get("cuda", ())), catalog,
                         tuple(problems), bundledBackend())


class _FailedStart:
    """A probe whose interpreter could not be started: finished at once, with the reason on stderr."""

    def __init__(self, reason: str) -> None:
        self.finished, self.returncode, self.stdoutLines, self.stderrLines = True, None, [], [reason]


def runBackendJson(pythonExecutable: Optional[str], args: Sequence[str], timeout: float = 120.0,
                   acceptedCodes: Sequence[int] = (0,)) -> dict:
    """Run a quick backend command (`mrisr methods --json`, `mrisr plan … --json`) and return its JSON answer."""
    python = pythonExecutable or defaultPythonExecutable()
    try:
        completed = subprocess.run([python, "-m", "mrisr.cli", *args], capture_output=True, text=True,
                                   encoding="utf-8", errors="replace", timeout=timeout, stdin=subprocess.DEVNULL,
                                   env=backendEnvironment(python))
    except OSError as exc:
        raise EnhanceError(f"cannot start the backend with {python!r}: {exc.strerror or exc}") from None
    except subprocess.TimeoutExpired:
        raise EnhanceError(f"the backend ({python}) did not answer within {timeout:g} s: check it with "
                           "Advanced → Check backend") from None
    if completed.returncode not in acceptedCodes or not completed.stdout.lstrip().startswith("{"):
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnhanceError(f"the mrisr backend is not usable from {python} ({tail}): install it first")
    return json.loads(completed.stdout)


def loadCatalog(pythonExecutable: Optional[str] = None, timeout: float = 120.0) -> MethodCatalog:
    """The method registry and limits through `mrisr methods --json` (quick: it does not import torch)."""
    return MethodCatalog.fromRegistry(runBackendJson(pythonExecutable, ["methods", "--json"], timeout))


def planRun(pythonExecutable: Optional[str], inputPath: str, outputPath: Optional[str], arguments: Sequence[str],
            timeout: float = 120.0) -> RunPlan:
    """The backend's plan of `mrisr enhance inputPath outputPath arguments…` (`mrisr plan`, no torch, no
    method run): output grid, files and the errors it would refuse with (exit code 2)."""
    paths = [inputPath] + ([outputPath] if outputPath else [])
    return RunPlan.fromBackend(runBackendJson(pythonExecutable, ["plan", *paths, *arguments, "--json"], timeout,
                                              acceptedCodes=(0, 2)))


def readRequirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """The requirement lines of a requirements file, without comments and blank lines."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def backendSourceDir() -> Optional[Path]:
    """The backend's source (a folder with pyproject.toml): $MRISR_BACKEND_SOURCE, installed or checkout copy."""
    candidates = [os.environ.get("MRISR_BACKEND_SOURCE"),
                  MODULE_DIR.parent / BACKEND_FOLDER_NAME / "python_backend",
                  MODULE_DIR.parent / "python_backend"]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "pyproject.toml").is_file():
            return Path(candidate)
    return None


def protectedConstraints(packages: Sequence[str] = PROTECTED_PACKAGES) -> list[str]:
    """`name==version` pins of the packages this Python already has, so pip never replaces them."""
    pins = []
    for name in packages:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def pipInstallSteps(constraintsFile: str, backendSource: Path, requirementsFile: Path = REQUIREMENTS_FILE,
                    reinstall: bool = False) -> list[list[str]]:
    """The pip argument lists that install the backend's dependencies, then the backend without deps
    (replacing an installed backend of any version when `reinstall`)."""
    return [["-r", str(requirementsFile), "-c", constraintsFile],
            ["--no-deps", *(["--force-reinstall"] if reinstall else []), str(backendSource)]]


class PipRun:
    """`python -m pip install ARGS` in the background, its output (stdout and stderr) line by line, so that
    a dialog can show it while it runs; `poll()` returns the new lines."""

    def __init__(self, pythonExecutable: Optional[str], args: Sequence[str]) -> None:
        self.python = pythonExecutable or defaultPythonExecutable()
        self.command = [self.python, "-m", "pip", "install", *map(str, args)]
        self.lines: list[str] = []
        self._new: list[str] = []
        self._lock = threading.Lock()
        self._process: Optional[subprocess.Popen] = None
        self._reader: Optional[threading.Thread] = None

    def start(self) -> "PipRun":
        try:
            self._process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
                                             bufsize=1, env=backendEnvironment(self.python))
        except OSError as exc:
            raise EnhanceError(f"cannot start pip with {self.python!r}: {exc.strerror or exc}") from None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        for line in self._process.stdout:
            line = line.rstrip("\r\n")
            with self._lock:
                self.lines.append(line)
                self._new.append(line)
        self._process.stdout.close()

    def poll(self) -> list[str]:
        with self._lock:
            new, self._new = self._new, []
        return new

    @property
    def finished(self) -> bool:
        return self._process is not None and self._process.poll() is not None and not self._reader.is_alive()

    @property
    def returncode(self) -> Optional[int]:
        return None if self._process is None else self._process.poll()

    def cancel(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def runPip(pythonExecutable: Optional[str], args: Sequence[str], onLine: Optional[Callable[[str], None]] = None,
           idle: Optional[Callable[[], None]] = None, timeout: float = 3600.0) -> list[str]:
    """Run pip install ARGS, calling `onLine(line)` for every line of its output (from this thread) and
    `idle()` between polls; returns the output; EnhanceError with pip's last lines when it fails."""
    run = PipRun(pythonExecutable, args).start()
    deadline = time.monotonic() + timeout
    while True:
        done = run.finished
        for line in run.poll():
            log.info("pip: %s", line)
            if onLine is not None:
                onLine(line)
        if done:
            break
        if time.monotonic() > deadline:
            run.cancel()
            raise EnhanceError(f"pip did not finish within {timeout:g} s and was stopped")
        if idle is not None:
            idle()
        time.sleep(0.05)
    if run.returncode != 0:
        tail = [line for line in run.lines if line.strip()][-3:] or [f"exit code {run.returncode}"]
        raise EnhanceError("pip install failed: " + " / ".join(line.strip() for line in tail))
    return run.lines


def installExtra(pipInstall: Callable[[list[str]], None], extra: str, backendSource: Optional[Path] = None) -> list[str]:
    """Install the requirements of one of the bundled backend's extras (e.g. "eval": the MNI152 template's
    package for the low-field sample) under the same constraints as the backend (Slicer's numpy and SimpleITK
    stay); returns the requirements installed."""
    bundled = bundledBackend(backendSource)
    requirements = list(bundled.extras.get(extra, ())) if bundled is not None else []
    if not requirements:
        raise EnhanceError(f"the bundled backend declares no {extra!r} extra: install its packages by hand")
    with tempfile.TemporaryDirectory(prefix="MRISR-pip-") as folder:
        constraints = Path(folder) / "constraints.txt"
        constraints.write_text("\n".join(protectedConstraints()) + "\n", encoding="utf-8")
        pipInstall([*requirements, "-c", str(constraints)])
    return requirements


def installBackend(pipInstall: Callable[[list[str]], None], installTorch: Optional[Callable[[], None]] = None,
                   backendSource: Optional[Path] = None, slicerVersion: Optional[tuple[int, ...]] = None,
                   pythonVersion: Sequence[int] = tuple(sys.version_info[:3]), reinstall: bool = False) -> None:
    """Install torch (through `installTorch`, e.g. the PyTorch extension), the requirements and the backend.

    `pipInstall` receives pip arguments (after `pip install`), e.g. `slicer.util.pip_install`. An older
    Slicer (Python < 3.10) is refused before anything is downloaded.
    """
    problem = versionProblem(slicerVersion or MINIMUM_SLICER, pythonVersion)
    if problem:
        raise EnhanceError(problem)
    source = backendSource or backendSourceDir()
    if source is None:
        raise EnhanceError("the backend source (python_backend with pyproject.toml) was not found next to the module: "
                           "set MRISR_BACKEND_SOURCE to it")
    if installTorch is not None:
        installTorch()
    with tempfile.TemporaryDirectory(prefix="MRISR-pip-") as folder:
        constraints = Path(folder) / "constraints.txt"
        constraints.write_text("\n".join(protectedConstraints()) + "\n", encoding="utf-8")
        for args in pipInstallSteps(str(constraints), source, reinstall=reinstall):
            pipInstall(args)
