"""Overhead of `mrisr serve` over the local pipeline (B-spline, 200×240×200 output) and the server's peak RSS.

A real server (`python -m mrisr.server`, one CPU worker) on a free loopback port. Overhead: the median
round trip of `enhance_remote_file` (upload, queue, run in the warm worker, download, atomic write) minus
the median `enhance_file` in this process, same input file, both warm. Memory: peak RSS (VmHWM) of the
server process and of its worker after three jobs were submitted at once (one running, two queued).
Linux only (/proc).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from mrisr.io.volumes import read_volume, write_volume
from mrisr.pipeline import EnhanceOptions, enhance_file
from mrisr.progress import ProgressCallback, ProgressEvent
from mrisr.simulation.degradation import PRESETS, degrade
from mrisr.simulation.template import mni_image

TARGET_OVERHEAD_SECONDS = 1.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path (default 3)")
    parser.add_argument("--preset", default="thick5", help="degradation preset of the input (default thick5)")


def _peak_rss_mib(pid: int) -> float:
    """VmHWM of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@contextlib.contextmanager
def _server(token: str) -> Iterator[tuple[str, subprocess.Popen]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "mrisr.server", "--port", str(port), "--token", token,
                                "--device", "cpu", "--workers", "1"], start_new_session=True,
                               stdout=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _wait_listening(client, process: subprocess.Popen) -> None:
    from mrisr.errors import MRISRError

    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        with contextlib.suppress(MRISRError):
            client.methods()
            return
        time.sleep(0.1)
    raise RuntimeError("the server did not start listening within 60 s")


def _median_seconds(run, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(round(time.perf_counter() - started, 3))
    return statistics.median(times), times


def run(args: argparse.Namespace, progress: ProgressCallback) -> dict:
    from mrisr.server.client import ServerClient, enhance_remote_file, wait_for_job

    options = EnhanceOptions(method="bspline")
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="mrisr-bench-server-") as scratch:
        folder = Path(scratch)
        source = folder / "thick.nii.gz"
        write_volume(degrade(mni_image("t1", pad_to_multiple=40), PRESETS[args.preset]), source)
        enhance_file(source, folder / "warm.nii.gz", options)
        local, local_times = _median_seconds(lambda: enhance_file(source, folder / "local.nii.gz", options),
                                             args.repeats)
        with _server(token) as (url, process), ServerClient(url, token) as client:
            _wait_listening(client, process)
            enhance_remote_file(client, source, folder / "warm_remote.nii.gz", options)
            remote, remote_times = _median_seconds(
                lambda: enhance_remote_file(client, source, folder / "remote.nii.gz", options), args.repeats)
            progress(ProgressEvent("queued jobs", 0, 3))
            jobs = [client.submit(source, {"method": "bspline"}) for _ in range(3)]
            positions = [job["position"] for job in jobs]
            for done, job in enumerate(jobs, 1):
                wait_for_job(client, job["id"])
                client.cancel(job["id"])
                progress(ProgressEvent("queued jobs", done, 3))
            workers = _children(process.pid)
            memory = {"server_peak_rss_mib": _peak_rss_mib(process.pid),
                      "worker_peak_rss_mib": [_peak_rss_mib(pid) for pid in workers]}
        size = list(read_volume(folder / "remote.nii.gz").GetSize())
        input_mib = round(source.stat().st_size / 2**20, 2)
    overhead = round(remote - local, 3)
    return {"method": "bspline", "output_size": size, "input_mib": input_mib,
            "local_seconds": local, "local_runs": local_times, "remote_seconds": remote, "remote_runs": remote_times,
            "overhead_seconds": overhead, "target_overhead_seconds": TARGET_OVERHEAD_SECONDS,
            "meets_target": overhead <= TARGET_OVERHEAD_SECONDS, "queue_positions_at_submit": positions, **memory}
