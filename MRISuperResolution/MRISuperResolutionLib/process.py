"""The backend in a background process: start it, read its JSON progress lines, cancel its whole tree.

Nothing here touches MRML or Qt. Reader threads only fill a queue; the caller drains it with `poll()`
on its own (main) thread, so progress callbacks and scene changes always happen there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from .estimates import formatDuration

log = logging.getLogger(__name__)

ERROR_PREFIX = "mrisr: error:"
CANCELLED_EXIT_CODES = (130, -signal.SIGTERM, -signal.SIGKILL) if os.name != "nt" else (130, 1)
STAGE_WEIGHTS = {"load": (0.0, 0.05), "save": (0.95, 1.0)}
WORK_BAND = (0.05, 0.95)


@dataclass(frozen=True)
class ProgressUpdate:
    """One progress line of the backend: `done` of `total` units of a named stage; newer backends add the
    whole run's fraction `overall` (0..1, never decreasing) and the seconds left `etaSeconds` (None while
    unknown)."""

    stage: str
    done: int
    total: int
    message: str = ""
    overall: Optional[float] = None
    etaSeconds: Optional[float] = None

    @property
    def stageFraction(self) -> float:
        return min(1.0, max(0.0, self.done / self.total)) if self.total > 0 else 0.0

    @property
    def overallFraction(self) -> float:
        """The whole run's progress: the backend's own `overall` when it sends one; otherwise a guess in
        which loading and saving are short and the rest is the work."""
        if self.overall is not None:
            return min(1.0, max(0.0, self.overall))
        low, high = STAGE_WEIGHTS.get(self.stage, WORK_BAND)
        return low + (high - low) * self.stageFraction

    def text(self) -> str:
        counts = f" {self.done}/{self.total}" if self.total > 1 else ""
        return f"{self.stage}{counts}"


def _optionalFloat(value) -> Optional[float]:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def parseProgressLine(line: str) -> Optional[ProgressUpdate]:
    """A ProgressUpdate from one `--progress json` line, or None for any other line."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
        return ProgressUpdate(str(data["stage"]), int(data["done"]), int(data["total"]), str(data.get("message", "")),
                              _optionalFloat(data.get("overall")), _optionalFloat(data.get("eta_s")))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def formatRemaining(seconds: float) -> str:
    """"about 40 s left", "about 3 min left", "about 1.5 h left"."""
    return f"about {formatDuration(seconds)} left"


def errorMessage(stderrLines: Sequence[str], returncode: Optional[int]) -> str:
    """The backend's one-line error, or the last thing it said, or its exit code."""
    for line in reversed(stderrLines):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX):].strip()
    plain = [line for line in stderrLines if line.strip() and parseProgressLine(line) is None]
    if plain:
        return plain[-1].strip()
    return f"the backend stopped with exit code {returncode} and no message"


def defaultPythonExecutable() -> str:
    """The interpreter that runs the backend: $MRISR_PYTHON, Slicer's PythonSlicer, or this Python."""
    configured = os.environ.get("MRISR_PYTHON")
    if configured:
        return configured
    return shutil.which("PythonSlicer") or sys.executable


def backendCommand(pythonExecutable: Optional[str] = None, parentPid: Optional[int] = None) -> list[str]:
    """The command prefix that runs the backend CLI with JSON progress on stderr. The backend stops itself
    (as on Ctrl-C: no output, its temporary files removed) once process `parentPid` (default: this one,
    i.e. Slicer) has ended, so a crashed Slicer leaves no backend running."""
    return [pythonExecutable or defaultPythonExecutable(), "-m", "mrisr.cli", "--progress", "json",
            "--parent-pid", str(os.getpid() if parentPid is None else parentPid)]


def processAlive(pid: int) -> bool:
    """Whether process `pid` runs (on Windows through the process handle: os.kill would terminate it)."""
    if os.name == "nt":
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        try:
            return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _popenPlatformOptions() -> dict:
    if os.name == "nt":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        return {"creationflags": flags}
    return {"start_new_session": True}


class BackendProcess:
    """One run of a backend command; `poll()` returns new progress, `cancel()` kills the process tree."""

    def __init__(self, command: Sequence[str], env: Optional[dict] = None, cwd: Optional[str] = None,
                 stdinPipe: bool = False) -> None:
        self.command = [str(c) for c in command]
        self.env = env
        self.cwd = cwd
        self.stdinPipe = stdinPipe  # kept open while it runs; closing it asks the backend to stop (remote runs)
        self.stderrLines: list[str] = []
        self.stdoutLines: list[str] = []
        self.cancelled = False
        self._queue: "queue.Queue[ProgressUpdate]" = queue.Queue()
        self._readers: list[threading.Thread] = []
        self._process: Optional[subprocess.Popen] = None

    def start(self) -> "BackendProcess":
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("PYTHONIOENCODING", "utf-8")
        log.info("starting backend: %s", subprocess.list2cmdline(self.command))
        try:
            self._process = subprocess.Popen(
                self.command, stdin=subprocess.PIPE if self.stdinPipe else subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, encoding="utf-8", errors="replace", bufsize=1, env=env, cwd=self.cwd,
                **_popenPlatformOptions(),
            )
        except OSError as exc:
            raise FileNotFoundError(f"cannot start the backend with {self.command[0]!r}: {exc.strerror or exc}") from exc
        self._readers = [
            threading.Thread(target=self._read, args=(self._process.stderr, self.stderrLines, True), daemon=True),
            threading.Thread(target=self._read, args=(self._process.stdout, self.stdoutLines, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        return self

    def _read(self, stream, lines: list[str], parseProgress: bool) -> None:
        for line in stream:
            line = line.rstrip("\r\n")
            update = parseProgressLine(line) if parseProgress else None
            if update is not None:
                self._queue.put(update)
            else:
                lines.append(line)
        stream.close()

    @property
    def pid(self) -> Optional[int]:
        return None if self._process is None else self._process.pid

    @property
    def finished(self) -> bool:
        """The process has exited and everything it printed has been read (after a cancel: it has exited,
        even if a stray grandchild still holds its output pipes)."""
        if self._process is None or self._process.poll() is None:
            return False
        return self.cancelled or not any(reader.is_alive() for reader in self._readers)

    @property
    def returncode(self) -> Optional[int]:
        return None if self._process is None else self._process.poll()

    def poll(self) -> list[ProgressUpdate]:
        """The progress lines that arrived since the last call (never blocks)."""
        updates = []
        while True:
            try:
                updates.append(self._queue.get_nowait())
            except queue.Empty:
                return updates

    def wait(self, timeout: Optional[float] = None) -> int:
        """Block until the process has exited and its output is read; returns the exit code."""
        code = self._process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def errorMessage(self) -> str:
        return errorMessage(self.stderrLines, self.returncode)

    def stderrText(self) -> str:
        """Everything the backend wrote to stderr except its progress lines (tracebacks, warnings, the error)."""
        return "\n".join(self.stderrLines)

    def cancel(self, grace: float = 3.0) -> None:
        """Terminate the process and all its children; kill them if they are still alive after `grace` s.

        With a stdin pipe, closing it comes first: a remote run (`enhance --server --cancel-on-stdin-close`)
        then cancels its server job; on Windows, where the kill gives no chance to do so, it is waited for.
        Never raises: a tree that does not die in time is logged, and the run counts as cancelled anyway.
        """
        if self._process is None:
            return
        self.cancelled = True
        if self._process.stdin is not None:
            try:
                self._process.stdin.close()
                if os.name == "nt":
                    self._process.wait(grace)
            except (OSError, subprocess.TimeoutExpired):
                pass
        try:
            killProcessTree(self._process, grace)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("the backend (pid %s) did not stop within %g s: %s", self._process.pid, grace, exc)
        for reader in self._readers:
            reader.join(grace)


def killProcessTree(process: subprocess.Popen, grace: float = 3.0) -> None:
    """Stop a process started by BackendProcess and every process it started."""
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
        process.wait(grace)
        return
    group = process.pid  # start_new_session=True: the process leads its own group
    _signalGroup(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _groupAlive(group):
        process.poll()
        time.sleep(0.05)
    if _groupAlive(group):
        _signalGroup(group, signal.SIGKILL)
    process.wait(grace)


def _signalGroup(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _groupAlive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
