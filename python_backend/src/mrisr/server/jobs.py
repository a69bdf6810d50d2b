"""Jobs, their bounded queue and the workers that run them.

Each worker is a thread that owns one warm worker process (`mrisr.server.worker`). Cancelling a running
job kills its process; a process that dies (crash, out of memory, cancel) fails or cancels only its
job, and the thread starts a fresh process for the next one. Finished jobs are kept `ttl_seconds` for
download, then their folder is removed; a downloaded result is removed at once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrisr.server.config import ServerConfig

log = logging.getLogger(__name__)
MAX_EVENTS_KEPT = 5000
FINAL_STATES = ("done", "failed", "cancelled")


class QueueFull(Exception):
    """The queue holds `queue_size` waiting jobs already."""


@dataclass
class Job:
    """One enhancement: its folder (uploads and outputs, server-chosen names), spec, state and events."""

    id: str
    folder: Path
    spec: dict[str, Any]
    display_names: dict[str, str]  # server file name → the client's name, for messages only
    state: str = "queued"
    error: str | None = None
    error_is_input: bool = False
    summary: dict[str, Any] | None = None
    finished_at: float | None = None
    events: deque = field(default_factory=lambda: deque(maxlen=MAX_EVENTS_KEPT))
    event_count: int = 0  # events ever added; `events` holds the last MAX_EVENTS_KEPT of them
    version: int = 0  # bumped on every change, for long-polling

    def add_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.event_count += 1
        self.version += 1

    def events_since(self, since: int) -> list[dict[str, Any]]:
        first = self.event_count - len(self.events)
        return list(self.events)[max(0, since - first):]

    def public_message(self, message: str) -> str:
        """A worker message with the job folder's paths replaced by the client's file names."""
        for name, shown in self.display_names.items():
            message = message.replace(str(self.folder / name), shown)
        return message.replace(str(self.folder) + os.sep, "").replace(str(self.folder), "the job folder")


class WorkerProcess:
    """A warm `python -m mrisr.server.worker` process pinned to one device."""

    def __init__(self, index: int, config: ServerConfig) -> None:
        self.index = index
        self.config = config
        self.process: subprocess.Popen | None = None

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.config.device == "cuda":
            env["CUDA_VISIBLE_DEVICES"] = str(self.index)
        else:
            shared = max(1, (os.cpu_count() or 1) // self.config.workers)
            env["MRISR_WORKER_THREADS"] = str(self.config.cpu_threads or shared)
        return env

    def ensure_started(self) -> subprocess.Popen:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mrisr.server.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env=self._environment(), text=True, encoding="utf-8", bufsize=1)
            ready = self.process.stdout.readline()
            if not ready.startswith('{"ready"'):
                raise RuntimeError(f"worker {self.index} did not start: {ready.strip()!r}")
        return self.process

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()

    def close(self) -> None:
        if self.process is not None:
            self.kill()
            self.process.wait(timeout=10)
            for stream in (self.process.stdin, self.process.stdout):
                stream.close()
            self.process = None


class JobQueue:
    """The jobs a server knows, the queue of waiting ones and the worker threads."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.jobs: dict[str, Job] = {}
        self.waiting: list[str] = []
        self.lock = threading.Condition()
        self.stopping = threading.Event()
        self.workers = [WorkerProcess(i, config) for i in range(config.workers)]
        self.running: dict[str, WorkerProcess] = {}
        self.threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        for worker in self.workers:
            self.threads.append(threading.Thread(target=self._work, args=(worker,), daemon=True,
                                                 name=f"mrisr-worker-{worker.index}"))
        self.threads.append(threading.Thread(target=self._sweep, daemon=True, name="mrisr-ttl"))
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            self.lock.notify_all()
        for worker in self.workers:
            worker.kill()
        for thread in self.threads:
            thread.join(timeout=15)
        for worker in self.workers:
            worker.close()

    # -- jobs -----------------------------------------------------------------------------------------

    def new_folder(self) -> tuple[str, Path]:
        """A fresh job id (random, unguessable) and its folder, created empty and private."""
        job_id = uuid.uuid4().hex
        folder = self.config.work_dir / job_id
        folder.mkdir(mode=0o700)
        return job_id, folder

    def submit(self, job: Job) -> int:
        """Queue a job; its 1-based place among the waiting jobs. QueueFull when the queue is full."""
        with self.lock:
            if len(self.waiting) >= self.config.queue_size:
                raise QueueFull(f"the server's queue is full ({len(self.waiting)} jobs waiting): try again later")
            self.jobs[job.id] = job
            self.waiting.append(job.id)
            self.lock.notify_all()
            return len(self.waiting)

    def get(self, job_id: str) -> Job | None:
        """The job, or None if unknown, removed or past its TTL."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is not None and self._expired(job, time.monotonic()):
                self._remove(job)
                return None
            return job

    def position(self, job: Job) -> int:
        """1-based place in the queue for a waiting job, 0 otherwise."""
        with self.lock:
            return self.waiting.index(job.id) + 1 if job.id in self.waiting else 0

    def cancel(self, job: Job) -> None:
        """Cancel a waiting or running job (killing its worker process); a finished job is removed."""
        with self.lock:
            if job.state in FINAL_STATES:
                self._remove(job)
                return
            if job.id in self.waiting:
                self.waiting.remove(job.id)
                self._finish(job, "cancelled", "cancelled by the user; no output was written")
                return
            job.state = "cancelling"
            job.version += 1
            worker = self.running.get(job.id)
        if worker is not None:
            worker.kill()

    def remove(self, job: Job) -> None:
        with self.lock:
            self._remove(job)

    def _remove(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        if job.id in self.waiting:
            self.waiting.remove(job.id)
        shutil.rmtree(job.folder, ignore_errors=True)

    def _expired(self, job: Job, now: float) -> bool:
        return job.finished_at is not None and now - job.finished_at > self.config.ttl_seconds

    def _finish(self, job: Job, state: str, error: str | None = None, is_input: bool = False) -> None:
        job.state, job.error, job.error_is_input = state, error, is_input
        job.finished_at = time.monotonic()
        job.version += 1

    # -- threads --------------------------------------------------------------------------------------

    def _next(self, worker: WorkerProcess) -> Job | None:
        with self.lock:
            while not self.waiting and not self.stopping.is_set():
                self.lock.wait(timeout=1.0)
            if self.stopping.is_set():
                return None
            job = self.jobs[self.waiting.pop(0)]
            job.state = "running"
            job.version += 1
            self.running[job.id] = worker
            return job

    def _work(self, worker: WorkerProcess) -> None:
        while not self.stopping.is_set():
            try:
                worker.ensure_started()
            except (OSError, RuntimeError) as exc:
                log.error("worker %d: %s; retrying in 5 s", worker.index, exc)
                self.stopping.wait(5.0)
                continue
            job = self._next(worker)
            if job is not None:
                self._run(worker, job)

    def _run(self, worker: WorkerProcess, job: Job) -> None:
        process = worker.process
        outcome: dict[str, Any] = {}
        try:
            process.stdin.write(json.dumps(job.spec) + "\n")
            process.stdin.flush()
            for line in process.stdout:
                message = json.loads(line)
                if "event" in message:
                    event = message["event"] | {"message": job.public_message(message["event"]["message"])}
                    with self.lock:
                        job.add_event(event)
                    continue
                outcome = message
                break
        except (OSError, ValueError) as exc:
            log.warning("worker %d lost during job %s: %s", worker.index, job.id, exc)
        code = None
        if not outcome and job.state != "cancelling":
            try:
                code = process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        with self.lock:
            self.running.pop(job.id, None)
            if job.state == "cancelling":
                self._finish(job, "cancelled", "cancelled by the user; no output was written")
            elif "done" in outcome:
                job.summary = outcome["done"]
                self._finish(job, "done")
            elif "error" in outcome:
                self._finish(job, "failed", job.public_message(outcome["error"]), outcome.get("input", False))
            else:
                self._finish(job, "failed", f"the worker process died during this job (exit code {code}); "
                                            f"the server keeps serving: try again or use a smaller volume")
        if job.state == "cancelled" or not outcome:
            worker.close()  # a killed or dead worker process is replaced before the next job
        if job.state != "done":
            shutil.rmtree(job.folder, ignore_errors=True)  # no partial output is kept

    def _sweep(self) -> None:
        interval = max(0.2, min(self.config.ttl_seconds / 4, 30.0))
        while not self.stopping.wait(interval):
            now = time.monotonic()
            with self.lock:
                for job in [j for j in self.jobs.values() if self._expired(j, now)]:
                    self._remove(job)
