"""Backend → Server: the module's logic against a real `mrisr serve` on 127.0.0.1 (a subprocess on a free
port, real HTTP, real worker processes). The module runs the local backend as the server's client, so
results, progress, cancel and failures must match a local run."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import vtk

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from MRISuperResolutionLib import EnhanceCancelled, EnhanceError, dependencies, estimates  # noqa: E402
from MRISuperResolutionLib.logic import DIFFERENCE_ROLE, INTERPOLATED_ROLE  # noqa: E402
from MRISuperResolutionLib.process import processAlive  # noqa: E402

TOKEN = "slicer-test-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """`python -m mrisr.server` on a free loopback port, one CPU worker; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    work = tmp_path_factory.mktemp("server") / "jobs"
    process = subprocess.Popen([sys.executable, "-m", "mrisr.server", "--port", str(port), "--token", TOKEN,
                                "--device", "cpu", "--threads", "1", "--work-dir", str(work)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        for _ in range(600):
            assert process.poll() is None, process.stderr.read().decode()
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{url}/v1/methods", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
                break
            time.sleep(0.1)
        else:
            raise AssertionError("mrisr serve did not listen within 60 s")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        process.stderr.close()


def server_job_state(url: str, jobId: str) -> str:
    response = httpx.get(f"{url}/v1/jobs/{jobId}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    return "removed" if response.status_code == 404 else response.json()["state"]


def ijkToRAS(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def test_bspline_on_the_server_gives_the_nodes_of_a_local_run(world, thick_volume, logic, server, monkeypatch):
    monkeypatch.delenv("MRISR_SERVER_TOKEN", raising=False)
    inputNode = world.loadVolume(thick_volume, "T1")
    local = logic.enhance(inputNode, method="bspline", targetSpacing=(2.0, 2.0, 2.0))
    seen = []
    job = logic.enhance(inputNode, method="bspline", targetSpacing=(2.0, 2.0, 2.0), server=server, token=TOKEN,
                        blocking=False, onProgress=lambda j: seen.append((j.progress.stage, j.progress.message)))
    assert TOKEN not in " ".join(job.process.command)  # the token travels in the environment only
    remote = job.wait(timeout=300)
    assert remote is not local and job.server == server and server in job.statusText()
    for role in (None, INTERPOLATED_ROLE, DIFFERENCE_ROLE):
        a, b = (node if role is None else node.GetNodeReference(role) for node in (local, remote))
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(b), slicer.util.arrayFromVolume(a))
        np.testing.assert_allclose(ijkToRAS(b), ijkToRAS(a), atol=1e-6)
    stages = [update.stage for update in job.updates]
    assert seen and seen[-1][0] == "download"
    assert stages[0] == "upload" and stages[-1] == "download" and {"load", "interpolate", "save"} <= set(stages)
    assert remote.GetAttribute("MRISuperResolution.Server") == server
    assert os.listdir(world.tempRoot) == []


def test_cancel_stops_the_server_job_and_leaves_the_scene_unchanged(world, thick_volume, logic, server):
    inputNode = world.loadVolume(thick_volume, "T1")
    before = world.nodeIDs()
    job = logic.enhance(inputNode, method="diffusioniqt", steps=5, startStep=5, server=server, token=TOKEN,
                        blocking=False)
    deadline = time.monotonic() + 180
    while job.poll() and not any(update.stage not in ("upload", "load") for update in job.updates):
        assert time.monotonic() < deadline, "the server job did not start working"
        time.sleep(0.05)
    jobId = next(update.message.split()[1].rstrip(",") for update in job.updates
                 if update.stage == "upload" and update.message.startswith("job "))
    assert server_job_state(server, jobId) == "running"
    job.cancel()
    assert job.state == "cancelled" and not processAlive(job.process.pid)
    with pytest.raises(EnhanceCancelled):
        job.result()
    assert server_job_state(server, jobId) in ("cancelled", "removed")
    assert world.nodeIDs() == before and os.listdir(world.tempRoot) == []


def test_a_wrong_token_fails_with_one_line_and_the_scene_unchanged(world, thick_volume, logic, server):
    inputNode = world.loadVolume(thick_volume, "T1")
    before = world.nodeIDs()
    with pytest.raises(EnhanceError) as caught:
        logic.enhance(inputNode, method="bspline", targetSpacing=(2.0, 2.0, 2.0), server=server, token="wrong")
    message = str(caught.value)
    assert "refused the token" in message and "\n" not in message and not message.startswith("mrisr:")
    assert world.nodeIDs() == before and os.listdir(world.tempRoot) == []
    with pytest.raises(EnhanceError, match="refused the token"):
        dependencies.probeServer(sys.executable, server, "wrong")


def test_test_connection_lists_the_servers_methods_and_device(server, catalog):
    info = dependencies.probeServer(sys.executable, server, TOKEN)
    assert info.device == "cpu" and info.workers == 1 and info.gpus == ()
    assert info.catalog.names == catalog.names
    assert info.summary().startswith("CPU only; 1 worker(s); methods: ") and "bspline" in info.summary()
    with pytest.raises(EnhanceError, match="cannot reach the mrisr server"):
        dependencies.probeServer(sys.executable, f"http://127.0.0.1:{free_port()}", TOKEN)
    with pytest.raises(EnhanceError, match="no server URL"):
        dependencies.probeServer(sys.executable, " ", TOKEN)


def test_the_estimate_names_the_servers_device(catalog):
    bspline = catalog.get("bspline")
    voxels = 197 * 233 * 189
    assert estimates.describeEstimate(bspline, voxels, serverDevice="cpu") == (
        "≈ 5 s on the server's CPU (8.7 million output voxels)")
    assert estimates.describeEstimate(bspline, voxels, serverDevice="cuda") == (
        "8.7 million output voxels; no time measured for bspline on the server's GPU yet")
