"""`mrisr serve` over real HTTP on loopback: round trips against the local pipeline, and its failure cases.

Servers run as real uvicorn instances on free 127.0.0.1 ports (in a thread, or as `python -m mrisr.server`
for the restart test); jobs run in the server's real worker processes. Volumes are 40×40×10 phantoms.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import uvicorn  # noqa: E402

from conftest import make_image, phantom_array  # noqa: E402
from mrisr.errors import CancelledError, InputError, MRISRError  # noqa: E402
from mrisr.io.volumes import read_volume  # noqa: E402
from mrisr.pipeline import EnhanceOptions, enhance_file  # noqa: E402
from mrisr.progress import CancelToken, ProgressEvent  # noqa: E402
from mrisr.server.app import create_app  # noqa: E402
from mrisr.server.client import JobLostError, ServerClient, enhance_remote_file, wait_for_job  # noqa: E402
from mrisr.server.config import ServerConfig  # noqa: E402

TOKEN = "test-token"
SLOW = EnhanceOptions(method="diffusioniqt", steps=5, start_step=5)  # ~15 s on a busy core: cancelled long before


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(work_dir: Path, **limits) -> Iterator[tuple[str, object]]:
    """A real uvicorn server in a thread; yields its URL and its job queue."""
    config = ServerConfig(token=TOKEN, work_dir=work_dir, cpu_threads=1, **limits)
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the test server did not start within 30 s"
    try:
        yield f"http://127.0.0.1:{server.config.port}", app.state.jobs
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, object]]:
    with running_server(tmp_path_factory.mktemp("server") / "jobs", max_upload_bytes=1024 * 1024) as running:
        yield running


@pytest.fixture(scope="module")
def thick(tmp_path_factory) -> Path:
    """A 40×40×10 thick-slice (4 mm) phantom with an oblique-free but off-origin geometry."""
    path = tmp_path_factory.mktemp("inputs") / "thick.nii.gz"
    sitk.WriteImage(make_image(phantom_array((10, 40, 40)), spacing=(1.0, 1.0, 4.0)), str(path))
    return path


def job_folders(queue) -> list[Path]:
    """The job folders left on the server, after up to 5 s for removals that follow a response."""
    for _ in range(50):
        left = sorted(queue.config.work_dir.iterdir()) if queue.config.work_dir.exists() else []
        if not left:
            break
        time.sleep(0.1)
    return left


def assert_same_geometry(first: sitk.Image, second: sitk.Image) -> None:
    assert first.GetSize() == second.GetSize()
    np.testing.assert_allclose(first.GetOrigin(), second.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(first.GetSpacing(), second.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(first.GetDirection(), second.GetDirection(), atol=1e-9)


def test_bspline_round_trip_is_identical_to_local(server, thick, tmp_path):
    url, queue = server
    events: list[ProgressEvent] = []
    with ServerClient(url, TOKEN) as client:
        listed = client.methods()
        result = enhance_remote_file(client, thick, tmp_path / "remote.nii.gz", EnhanceOptions(method="bspline"),
                                     progress=events.append)
    enhance_file(thick, tmp_path / "local.nii.gz", EnhanceOptions(method="bspline"))
    remote, local = sitk.ReadImage(str(tmp_path / "remote.nii.gz")), sitk.ReadImage(str(tmp_path / "local.nii.gz"))
    assert_same_geometry(remote, local)
    assert np.array_equal(sitk.GetArrayFromImage(remote), sitk.GetArrayFromImage(local))
    assert result.summary["method"] == "bspline" and result.summary["size"] == [40, 40, 40]
    assert "bspline" in [m["name"] for m in listed["methods"]] and listed["server"]["device"] == "cpu"
    assert set(listed) >= {"default_method", "limits", "methods", "server"}
    stages = [e.stage for e in events]
    assert stages[0] == "upload" and stages[-1] == "download" and "interpolate" in stages
    assert not any(str(queue.config.work_dir) in e.message for e in events), "server paths leaked into events"
    assert job_folders(queue) == [], "a downloaded job is removed"


def test_job_events_carry_the_overall_progress_that_ends_at_one_after_the_segmentation(server, thick, tmp_path):
    from mrisr.run_progress import carried_overall

    url, _ = server
    events: list[ProgressEvent] = []
    with ServerClient(url, TOKEN) as client:
        enhance_remote_file(client, thick, tmp_path / "out.nii.gz", EnhanceOptions(method="bspline"),
                            progress=carried_overall(events.append), segment=True, segmenter="gmm")
    from_server = [e for e in events if e.stage not in ("upload", "download")]
    overall = [e.overall for e in events]
    assert overall == sorted(overall) and overall[0] == 0.0 and overall[-1] == 1.0
    assert all(e.overall is not None for e in from_server) and from_server[0].overall < 0.1
    save = next(e for e in from_server if e.stage == "save" and e.done == 1)
    assert save.overall < 1.0  # the segmentation's share follows
    assert from_server[-1].stage == "done" and from_server[-1].overall == 1.0


def test_learned_method_one_step_matches_local_with_the_same_seed(server, thick, tmp_path):
    url, _ = server
    options = EnhanceOptions(method="ressrdiff", steps=1, seed=3)
    with ServerClient(url, TOKEN) as client:
        enhance_remote_file(client, thick, tmp_path / "remote.nii.gz", options)
    enhance_file(thick, tmp_path / "local.nii.gz", options)
    remote, local = read_volume(tmp_path / "remote.nii.gz"), read_volume(tmp_path / "local.nii.gz")
    assert_same_geometry(remote, local)
    remote, local = sitk.GetArrayFromImage(remote), sitk.GetArrayFromImage(local)
    assert np.abs(remote - local).max() <= 1e-3 * (local.max() - local.min())  # thread counts differ


def test_samples_with_an_uncertainty_map_in_another_format_match_local(server, thick, tmp_path):
    url, _ = server
    options = EnhanceOptions(method="ressrdiff", steps=1, seed=5, samples=2)
    with ServerClient(url, TOKEN) as client:
        enhance_remote_file(client, thick, tmp_path / "remote.nii.gz", options,
                            uncertainty_path=tmp_path / "remote_sd.nrrd")
    enhance_file(thick, tmp_path / "local.nii.gz", options, uncertainty_path=tmp_path / "local_sd.nrrd")
    remote, local = read_volume(tmp_path / "remote_sd.nrrd"), read_volume(tmp_path / "local_sd.nrrd")
    assert_same_geometry(remote, local)
    remote, local = sitk.GetArrayFromImage(remote), sitk.GetArrayFromImage(local)
    assert local.max() > 0 and np.abs(remote - local).max() <= 1e-3 * local.max()


def test_cancel_mid_run_writes_nothing_and_the_server_goes_on(server, thick, tmp_path):
    url, queue = server
    cancel = CancelToken()

    def cancel_once_sampling(event: ProgressEvent) -> None:
        if event.stage not in ("upload", "load"):
            cancel.cancel()

    started = time.monotonic()
    with ServerClient(url, TOKEN) as client:
        with pytest.raises(CancelledError):
            enhance_remote_file(client, thick, tmp_path / "out.nii.gz", SLOW, progress=cancel_once_sampling,
                                cancel=cancel)
        assert time.monotonic() - started < 60
        assert cancel.cancelled and not (tmp_path / "out.nii.gz").exists()
        enhance_remote_file(client, thick, tmp_path / "after.nii.gz", EnhanceOptions(method="bspline"))
    assert (tmp_path / "after.nii.gz").exists()
    assert job_folders(queue) == []


def test_a_worker_crash_fails_only_its_job(server, thick, tmp_path):
    url, queue = server
    with ServerClient(url, TOKEN) as client:
        job = client.submit(thick, {"method": SLOW.method, "steps": SLOW.steps, "start_step": SLOW.start_step})
        state = client.status(job["id"])
        for _ in range(600):
            if state["state"] == "running" and state["next"] > 2:
                break
            state = client.status(job["id"], wait=0.1)
        os.kill(queue.workers[0].process.pid, signal.SIGKILL)
        with pytest.raises(MRISRError, match="worker process died"):
            wait_for_job(client, job["id"])
        enhance_remote_file(client, thick, tmp_path / "after.nii.gz", EnhanceOptions(method="bspline"))
    assert (tmp_path / "after.nii.gz").exists()


def test_two_concurrent_jobs_run_in_the_order_they_were_queued(server, thick):
    url, _ = server
    with ServerClient(url, TOKEN) as client:
        first = client.submit(thick, {"method": "ressrdiff", "steps": 4})
        second = client.submit(thick, {"method": "bspline"})
        assert first["position"] == 1 and second["position"] in (1, 2)  # 1 once the first has started
        state = client.status(second["id"])
        for _ in range(600):
            if state["state"] != "queued":
                break
            assert state["position"] >= 1
            state = client.status(second["id"], wait=0.2)
        assert client.status(first["id"])["state"] == "done", "the second job started before the first ended"
        wait_for_job(client, second["id"])
        for job in (first, second):
            client.cancel(job["id"])  # drops the finished jobs


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}"])
def test_a_missing_or_wrong_token_gets_401_and_no_job(server, thick, header):
    url, queue = server
    headers = {"Authorization": header} if header else {}
    with open(thick, "rb") as volume:
        response = httpx.post(f"{url}/v1/jobs", headers=headers, files={"volume": ("thick.nii.gz", volume)},
                              data={"options": "{}"})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{url}/v1/methods", headers=headers).status_code == 401
    assert job_folders(queue) == []
    with ServerClient(url, "wrong") as client, pytest.raises(InputError, match="refused the token"):
        client.methods()


def test_an_oversized_upload_gets_413_and_nothing_is_written(server):
    url, queue = server
    body = b"\0" * (1024 * 1024 + 1)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    response = httpx.post(f"{url}/v1/jobs", headers=auth, files={"volume": ("big.nii.gz", body)})
    assert response.status_code == 413 and "over this server's limit" in response.json()["detail"]
    assert job_folders(queue) == []

    def chunks():  # no Content-Length: the limit is enforced while streaming, and the partial file removed
        yield b"--b\r\nContent-Disposition: form-data; name=\"volume\"; filename=\"big.nii.gz\"\r\n\r\n"
        for _ in range(20):
            yield b"\0" * 65536
    response = httpx.post(f"{url}/v1/jobs", headers=auth | {"Content-Type": "multipart/form-data; boundary=b"},
                          content=chunks())
    assert response.status_code == 413
    assert job_folders(queue) == []


def test_a_corrupt_volume_gets_400_with_the_clis_message(server, tmp_path):
    url, queue = server
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"this is not a NIfTI file" * 20)
    with pytest.raises(InputError) as local:
        read_volume(corrupt)
    with ServerClient(url, TOKEN) as client:
        with pytest.raises(InputError) as remote:
            client.submit(corrupt, {"method": "bspline"})
        with pytest.raises(InputError, match="unknown method 'nope'"):
            enhance_remote_file(client, corrupt, tmp_path / "out.nii.gz", EnhanceOptions(method="nope"))
    assert str(remote.value) == str(local.value).replace(str(corrupt), corrupt.name)
    assert "\n" not in str(remote.value)
    assert job_folders(queue) == [] and not (tmp_path / "out.nii.gz").exists()


def test_a_job_after_its_ttl_is_404(thick, tmp_path):
    with running_server(tmp_path / "jobs", ttl_seconds=0.5) as (url, queue):
        with ServerClient(url, TOKEN) as client:
            job = client.submit(thick, {"method": "bspline"})
            wait_for_job(client, job["id"])
            time.sleep(1.0)
            response = httpx.get(f"{url}/v1/jobs/{job['id']}", headers={"Authorization": f"Bearer {TOKEN}"})
            assert response.status_code == 404
            with pytest.raises(JobLostError, match="no longer knows this job"):
                client.download(job["id"], tmp_path)
        assert job_folders(queue) == []


def _serve_process(port: int, work_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mrisr.server", "--port", str(port), "--token", TOKEN,
                             "--device", "cpu", "--threads", "1", "--work-dir", str(work_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _wait_listening(url: str, process: subprocess.Popen) -> None:
    for _ in range(300):
        assert process.poll() is None, process.stderr.read().decode()
        with contextlib.suppress(httpx.TransportError):
            httpx.get(f"{url}/v1/methods", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
            return
        time.sleep(0.1)
    raise AssertionError("the server process did not start listening within 30 s")


def test_a_server_restarted_mid_job_is_reported_as_a_lost_job(thick, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = _serve_process(port, tmp_path / "first")
    second = None
    try:
        _wait_listening(url, first)
        with ServerClient(url, TOKEN) as client:
            job = client.submit(thick, {"method": SLOW.method, "steps": SLOW.steps, "start_step": SLOW.start_step})
            os.killpg(first.pid, signal.SIGKILL)  # the server and its worker, mid-job
            first.wait(timeout=10)
            second = _serve_process(port, tmp_path / "second")
            started = time.monotonic()
            with pytest.raises(JobLostError) as lost:
                wait_for_job(client, job["id"], reconnect_seconds=30)
            assert time.monotonic() - started < 30
        message = str(lost.value)
        assert "no longer knows this job" in message and "run the enhancement again" in message
        assert "\n" not in message
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            if process is not None:
                process.stderr.close()


def test_enhance_remote_command_with_segmentation_writes_what_the_cli_writes(server, thick, tmp_path, capsys):
    from mrisr.cli import build_parser
    from mrisr.server.commands import enhance_remote

    url, _ = server
    output = tmp_path / "out.nii.gz"
    args = build_parser().parse_args(["enhance", str(thick), str(output), "--method", "bspline", "--segment",
                                      "--segmenter", "gmm", "--write-interpolated", str(tmp_path / "interp.nrrd")])
    args.server, args.token = url, TOKEN
    assert enhance_remote(args, lambda event: None) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["interp.nrrd", "out.nii.gz", "out.seg.nrrd", "out_input.seg.nrrd", "out_tissues.json"]
    assert read_volume(tmp_path / "interp.nrrd").GetSize() == (40, 40, 40)
    report = __import__("json").loads((tmp_path / "out_tissues.json").read_text())
    assert report["files"]["output_seg"] == str(tmp_path / "out.seg.nrrd")
    assert f"wrote {output}: 40x40x40 voxels" in capsys.readouterr().out


def test_serve_arguments_default_to_loopback_and_print_a_generated_token(tmp_path, capsys, monkeypatch):
    import argparse

    from mrisr.server.commands import add_serve_parser, server_config

    monkeypatch.delenv("MRISR_SERVER_TOKEN", raising=False)
    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--device", "cpu", "--work-dir", str(tmp_path / "w")])
    config = server_config(args)
    assert args.host == "127.0.0.1" and len(config.token) >= 24 and config.token in capsys.readouterr().out
    with pytest.raises(InputError, match="go together"):
        server_config(parser.parse_args(["serve", "--device", "cpu", "--ssl-certfile", "c.pem"]))


def _remote_enhance_process(url: str, thick: Path, output: Path) -> subprocess.Popen:
    """`mrisr enhance --server` as the Slicer module runs it: JSON progress, token in the environment, a
    stdin pipe it watches."""
    return subprocess.Popen([sys.executable, "-m", "mrisr.cli", "--progress", "json", "enhance", str(thick),
                             str(output), "--method", SLOW.method, "--steps", str(SLOW.steps), "--start-step",
                             str(SLOW.start_step), "--server", url, "--cancel-on-stdin-close"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"MRISR_SERVER_TOKEN": TOKEN}, start_new_session=True)


@pytest.mark.parametrize("how", ["sigterm", "stdin closed"])
def test_the_command_line_client_cancels_its_server_job_when_stopped(server, thick, tmp_path, how):
    import json

    url, queue = server
    output = tmp_path / "out.nii.gz"
    client = _remote_enhance_process(url, thick, output)
    job_id, stage = None, None
    try:
        for line in client.stderr:  # one JSON event per line; the upload event names the job
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("stage") == "upload" and event.get("done") == 1:
                job_id = event["message"].split()[1].rstrip(",")
            stage = event.get("stage", stage)
            if job_id and stage not in ("upload", "load"):
                break
        assert job_id and queue.get(job_id).state == "running", "the job did not start on the server"
        if how == "sigterm":
            client.send_signal(signal.SIGTERM)
        else:
            client.stdin.close()
        code = client.wait(timeout=30)
        rest = client.stderr.read()
        assert code == 130 and "mrisr: cancelled" in rest, rest
    finally:
        if client.poll() is None:
            os.killpg(client.pid, signal.SIGKILL)
        client.wait(timeout=10)
    job = queue.get(job_id)
    assert job is None or job.state == "cancelled", "the server job was left running"
    assert not output.exists()
