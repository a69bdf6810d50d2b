"""The HTTP API of `mrisr serve` (FastAPI).

    GET    /v1/methods            the methods (as `mrisr methods --json`), devices, free GPU memory, limits
    POST   /v1/jobs               multipart: volume, optional reference / reference_seg, options (JSON)
    GET    /v1/jobs/{id}          state, queue position, progress events; ?since=N&wait=S long-polls
    DELETE /v1/jobs/{id}          cancel (or drop a finished job)
    GET    /v1/jobs/{id}/result   a zip of the outputs; the job is removed once it has been sent

Every route needs `Authorization: Bearer <token>`. Errors are JSON `{"detail": "one line"}`; bad
input gets 400 with the CLI's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from mrisr.errors import InputError
from mrisr.server.catalog import server_document
from mrisr.server.config import ServerConfig
from mrisr.server.jobs import FINAL_STATES, Job, JobQueue, QueueFull
from mrisr.server.uploads import UploadTooLarge, receive_form
from mrisr.server.validation import check_job

log = logging.getLogger(__name__)
MAX_WAIT_SECONDS = 30.0
POLL_INTERVAL_SECONDS = 0.05


def _bearer(config: ServerConfig):
    """A dependency that refuses requests without the server's token (401) before reading any body."""
    expected = config.token.encode()

    def check(request: Request) -> None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), expected):
            raise HTTPException(401, "missing or wrong token: pass the server's token (--token or "
                                     "MRISR_SERVER_TOKEN)", headers={"WWW-Authenticate": "Bearer"})
    return check


def _job_state(queue: JobQueue, job: Job, since: int) -> dict[str, Any]:
    return {"id": job.id, "state": job.state, "position": queue.position(job), "error": job.error,
            "error_is_input": job.error_is_input, "events": job.events_since(since), "next": job.event_count,
            "result": job.summary}


def _result_files(job: Job) -> list[Path]:
    """The job's outputs in its folder (never the uploads)."""
    spec = job.spec
    names = [spec["output"], spec.get("uncertainty"), spec.get("interpolated"), "result.json"]
    if spec.get("segment"):
        stem = spec["output"].split(".")[0]
        names += [f"{stem}_input.seg.nrrd", f"{stem}.seg.nrrd", f"{stem}_tissues.json"]
    return [job.folder / n for n in names if n and (job.folder / n).is_file()]


def _zip_result(job: Job) -> Path:
    archive = job.folder / "result.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as bundle:
        for path in _result_files(job):
            bundle.write(path, path.name)
    return archive


async def _new_job(request: Request, queue: JobQueue, config: ServerConfig) -> tuple[Job, int]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > config.max_upload_bytes:
        raise HTTPException(413, f"the upload is {int(declared) / 2**20:.1f} MiB, over this server's limit of "
                                 f"{config.max_upload_bytes / 2**20:.1f} MiB: crop the volume or ask for a larger --max-upload-mb")
    job_id, folder = queue.new_folder()
    display: dict[str, str] = {}
    try:
        form = await receive_form(request.headers.get("content-type", ""), request.stream(), folder,
                                  config.max_upload_bytes)
        display = form.display
        spec = await run_in_threadpool(check_job, folder, form.files, form.options, config)
        job = Job(job_id, folder, spec, form.display)
        return job, queue.submit(job)
    except UploadTooLarge:
        shutil.rmtree(folder, ignore_errors=True)
        raise HTTPException(413, f"the upload is over this server's limit of {config.max_upload_bytes / 2**20:.1f} "
                                 f"MiB: crop the volume or ask for a larger --max-upload-mb") from None
    except InputError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        message = Job(job_id, folder, {}, display).public_message(str(exc))
        raise HTTPException(400, message) from None
    except QueueFull as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise HTTPException(503, str(exc)) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def create_app(config: ServerConfig) -> FastAPI:
    """The server's app; its lifespan starts the job queue's workers and stops them (removing every job)."""
    queue = JobQueue(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        queue.start()
        try:
            yield
        finally:
            queue.stop()
            shutil.rmtree(config.work_dir, ignore_errors=True)

    app = FastAPI(title="mrisr", lifespan=lifespan, dependencies=[Depends(_bearer(config))],
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.jobs = queue

    def known(job_id: str) -> Job:
        job = queue.get(job_id)
        if job is None:
            raise HTTPException(404, f"job {job_id[:40]!r} is unknown here: it finished more than "
                                     f"{config.ttl_seconds:g} s ago, was downloaded or cancelled, or the server restarted")
        return job

    @app.get("/v1/methods")
    async def methods() -> dict[str, Any]:
        return await run_in_threadpool(server_document, config)

    @app.post("/v1/jobs", status_code=202)
    async def submit(request: Request) -> dict[str, Any]:
        job, position = await _new_job(request, queue, config)
        log.info("job %s queued at %d", job.id, position)
        return {"id": job.id, "state": job.state, "position": position}

    @app.get("/v1/jobs/{job_id}")
    async def status(job_id: str, since: int = 0, wait: float = 0.0) -> dict[str, Any]:
        job = known(job_id)
        deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT_SECONDS)
        seen = job.version
        while (job.version == seen and job.event_count <= since and job.state not in FINAL_STATES
               and time.monotonic() < deadline):
            await asyncio.sleep(POLL_INTERVAL_SECONDS)
        return _job_state(queue, known(job_id), since)

    @app.delete("/v1/jobs/{job_id}")
    async def cancel(job_id: str) -> dict[str, Any]:
        job = known(job_id)
        queue.cancel(job)
        return {"id": job.id, "state": job.state}

    @app.get("/v1/jobs/{job_id}/result")
    async def result(job_id: str) -> FileResponse:
        job = known(job_id)
        if job.state != "done":
            raise HTTPException(409, f"job {job.id} is {job.state}, not done: wait for it to finish"
                                + (f" ({job.error})" if job.error else ""))
        archive = await run_in_threadpool(_zip_result, job)
        return FileResponse(archive, media_type="application/zip", filename=f"mrisr-{job.id}.zip",
                            background=BackgroundTask(queue.remove, job))

    return app
