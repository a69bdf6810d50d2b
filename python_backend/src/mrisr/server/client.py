"""A client of `mrisr serve`: the same enhancement as `mrisr.pipeline.enhance_file`, run on a server,
with the same progress callbacks (`ProgressEvent`) and cancel token.

    with ServerClient("https://gpu.example:8765", token) as client:
        print(client.methods()["server"])                     # methods, GPUs, free memory, limits
        result = enhance_remote_file(client, "in.nii.gz", "out.nii.gz", EnhanceOptions(method="bspline"),
                                     progress=callback, cancel=token)

For a GUI that must not block, use the steps instead: `submit`, then `status(job_id, since, wait)` in a
timer until the state is final, `cancel(job_id)`, and `download(job_id, folder)`.
Errors are one line: InputError for bad input (the CLI's message), JobLostError when the server no
longer knows the job (it restarted, or the job expired), MRISRError when the server cannot be reached.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx

from mrisr.errors import CancelledError, InputError, MRISRError
from mrisr.io.atomic import atomic_output
from mrisr.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from mrisr.server.config import SINGLE_FILE_SUFFIXES

FINAL_STATES = ("done", "failed", "cancelled")
POLL_WAIT_SECONDS = 0.5  # long-poll length: the cancel token is checked at least this often
RECONNECT_SECONDS = 30.0  # how long a lost connection is retried while waiting for a job


class JobLostError(MRISRError):
    """The server no longer knows a job it accepted (it restarted, or the job expired)."""


class ServerUnreachable(MRISRError):
    """No HTTP answer from the server (refused, reset, timed out)."""


@dataclass(frozen=True)
class RemoteResult:
    """What a remote enhancement wrote locally and the server's summary (method, settings, seconds,
    size, spacing; tissues with segmentation); `seconds` is the whole round trip."""

    files: dict[str, Path]
    summary: dict[str, Any]
    seconds: float


class ServerClient:
    """Thin typed wrapper of the server's HTTP API; every failure is a one-line MRISRError."""

    def __init__(self, url: str, token: str, timeout: float = 60.0, verify: bool | str = True) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=httpx.Timeout(timeout, connect=10.0), verify=verify)

    def __enter__(self) -> "ServerClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"cannot reach the mrisr server at {self.url} ({type(exc).__name__}: "
                             f"{str(exc)[:100]}): check the URL and that `mrisr serve` runs there") from None
        if response.status_code >= 400:
            _raise_for(response, self.url)
        return response

    def methods(self) -> dict[str, Any]:
        """The server's methods (as `mrisr methods --json`), its devices, free GPU memory and limits."""
        return self._request("GET", "/v1/methods").json()

    def submit(self, volume: str | os.PathLike, options: dict[str, Any],
               reference: str | os.PathLike | None = None,
               reference_seg: str | os.PathLike | None = None) -> dict[str, Any]:
        """Upload a single-file volume (.nii/.nii.gz/.nrrd/.mha) and the options; {"id", "position"}."""
        parts = {"volume": volume, "reference": reference, "reference_seg": reference_seg}
        with _open_parts(parts) as files:
            data = {"options": json.dumps(options)}
            return self._request("POST", "/v1/jobs", files=files, data=data).json()

    def status(self, job_id: str, since: int = 0, wait: float = 0.0) -> dict[str, Any]:
        """The job's state, position, error and the events after the first `since`; waits up to `wait`
        seconds for something new. JobLostError when the server no longer knows the job."""
        return self._request("GET", f"/v1/jobs/{job_id}", params={"since": since, "wait": wait},
                             timeout=wait + 30.0).json()

    def cancel(self, job_id: str) -> None:
        self._request("DELETE", f"/v1/jobs/{job_id}")

    def download(self, job_id: str, folder: str | os.PathLike) -> dict[str, Path]:
        """Fetch and unpack a done job's outputs into `folder`; the server then removes the job.
        Returns server file name → local path."""
        folder = Path(folder)
        archive = folder / "result.zip"
        with self.http.stream("GET", f"/v1/jobs/{job_id}/result") as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response, self.url)
            with open(archive, "wb") as sink:
                for chunk in response.iter_bytes():
                    sink.write(chunk)
        unpacked = {}
        with zipfile.ZipFile(archive) as bundle:
            for name in bundle.namelist():
                if Path(name).name != name or name.startswith("."):
                    raise MRISRError(f"the server sent an unexpected file name {name!r}: check the server")
                bundle.extract(name, folder)
                unpacked[name] = folder / name
        archive.unlink()
        return unpacked


def _raise_for(response: httpx.Response, url: str) -> None:
    try:
        detail = response.json().get("detail", "")
    except (ValueError, AttributeError):
        detail = response.text[:200]
    detail = str(detail).splitlines()[0] if detail else f"HTTP {response.status_code}"
    if response.status_code == 401:
        raise InputError(f"the server at {url} refused the token: pass the token `mrisr serve` printed "
                         f"(--token or MRISR_SERVER_TOKEN)")
    if response.status_code == 404 and "/v1/jobs/" in str(response.request.url):
        raise JobLostError(f"the server at {url} no longer knows this job ({detail}): run the enhancement again")
    if response.status_code in (400, 409, 413):
        raise InputError(detail)
    raise MRISRError(f"the server at {url} answered {response.status_code}: {detail}")


@contextlib.contextmanager
def _open_parts(parts: dict[str, str | os.PathLike | None]) -> Iterator[dict[str, tuple[str, Any, str]]]:
    """The upload files (None parts skipped) opened for httpx, closed afterwards."""
    with contextlib.ExitStack() as stack:
        yield {name: (Path(path).name, stack.enter_context(open(path, "rb")), "application/octet-stream")
               for name, path in parts.items() if path is not None}


def wait_for_job(client: ServerClient, job_id: str, progress: ProgressCallback = no_progress,
                 cancel: CancelToken | None = None, reconnect_seconds: float = RECONNECT_SECONDS) -> dict[str, Any]:
    """Follow a job to its end, forwarding its events; cancel it on the server when `cancel` is set.
    Returns the final status of a done job; raises its error otherwise."""
    since, lost_since = 0, None
    while True:
        if cancel is not None and cancel.cancelled:
            with contextlib.suppress(MRISRError):
                client.cancel(job_id)
            cancel.check()
        try:
            state = client.status(job_id, since, POLL_WAIT_SECONDS)
            lost_since = None
        except ServerUnreachable:
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > reconnect_seconds:
                raise JobLostError(f"lost contact with the server at {client.url} for {reconnect_seconds:g} s "
                                   f"during job {job_id}: check the server, then run the enhancement again") from None
            time.sleep(min(1.0, reconnect_seconds / 10))
            continue
        for event in state["events"]:
            progress(ProgressEvent.from_json(event))
        since = state["next"]
        if state["state"] == "done":
            return state
        if state["state"] == "cancelled":
            raise CancelledError(state["error"] or "cancelled on the server; no output was written")
        if state["state"] == "failed":
            raise (InputError if state["error_is_input"] else MRISRError)(state["error"])


def _uploadable(path: str | os.PathLike, scratch: Path, name: str) -> Path:
    """A single file the server reads: the file itself, or (DICOM folder, .mhd, .nhdr) a local NRRD copy
    with the same voxels and geometry."""
    from mrisr.io.volumes import read_volume, write_volume

    path = Path(path)
    if path.is_file() and path.name.lower().endswith(SINGLE_FILE_SUFFIXES):
        return path
    return write_volume(read_volume(path), scratch / f"{name}.nrrd")


def _local_targets(files) -> dict[str, Path]:
    """Server file name → local path, following `mrisr enhance`'s naming (`mrisr.plan.RunFiles`)."""
    targets = {}
    for role in ("output", "uncertainty", "interpolated"):
        path = getattr(files, role)
        if path is not None:
            targets[f"{role}{_output_suffix(Path(path))}"] = Path(path)
    paths = files.segmentation()
    if paths is not None:
        targets |= {"output_input.seg.nrrd": paths.input_seg, "output.seg.nrrd": paths.output_seg,
                    "output_tissues.json": paths.report}
    return targets


def _output_suffix(output: Path) -> str:
    """The file format of a local output path, from those the server writes."""
    suffix = next((s for s in SINGLE_FILE_SUFFIXES if output.name.lower().endswith(s)), None)
    if suffix is None:
        raise InputError(f"output {output} has an extension the server does not write: use one of "
                         f"{', '.join(SINGLE_FILE_SUFFIXES)}")
    return suffix


def _install(fetched: Path, target: Path, targets: dict[str, Path]) -> None:
    """Copy one fetched output to its local path atomically; the tissue table names the local files."""
    if target.name.endswith("_tissues.json"):
        from mrisr.io.reporting import write_json

        report = json.loads(fetched.read_text(encoding="utf-8"))
        report["files"] = {"input_seg": str(targets["output_input.seg.nrrd"]),
                           "output_seg": str(targets["output.seg.nrrd"])}
        write_json(report, target)
        return
    with atomic_output(target, "".join(target.suffixes)) as tmp_name:
        shutil.copyfile(fetched, tmp_name)


def enhance_remote_file(client: ServerClient, input_path: str | os.PathLike, output_path: str | os.PathLike,
                        options, reference_path: str | os.PathLike | None = None,
                        progress: ProgressCallback = no_progress, cancel: CancelToken | None = None,
                        uncertainty_path: str | os.PathLike | None = None,
                        interpolated_path: str | os.PathLike | None = None, segment: bool = False,
                        segmenter: str = "unet", reference_seg: str | os.PathLike | None = None) -> RemoteResult:
    """`mrisr enhance` on the server: check the local paths, upload, follow, download and write atomically
    (inputs never overwritten; a failed or cancelled job writes nothing). `options` is an EnhanceOptions;
    the server chooses the device. With `segment`, the label maps and tissue table are written where
    `enhance --segment` writes them."""
    from mrisr.plan import RunFiles, check_files

    started = time.perf_counter()
    files = RunFiles(output_path, uncertainty_path, interpolated_path, segment, reference_seg)
    check_files(files, tuple(p for p in (input_path, reference_path, reference_seg) if p is not None), options.samples)
    targets = _local_targets(files)
    suffixes = {role: _output_suffix(Path(path)) if path is not None else None
                for role, path in (("output", output_path), ("uncertainty", uncertainty_path),
                                   ("interpolated", interpolated_path))}
    request = asdict(options) | {"output_suffix": suffixes["output"], "uncertainty": suffixes["uncertainty"],
                                 "interpolated": suffixes["interpolated"], "segment": segment, "segmenter": segmenter}
    with tempfile.TemporaryDirectory(prefix="mrisr-remote-") as scratch:
        progress(ProgressEvent("upload", 0, 1, str(input_path)))
        parts = {name: _uploadable(path, Path(scratch), name) if path is not None else None
                 for name, path in (("volume", input_path), ("reference", reference_path),
                                    ("reference_seg", reference_seg))}
        job = client.submit(parts["volume"], request, parts["reference"], parts["reference_seg"])
        progress(ProgressEvent("upload", 1, 1, f"job {job['id']}, place {job['position']} in the queue"))
        state = wait_for_job(client, job["id"], progress, cancel)
        progress(ProgressEvent("download", 0, 1, str(output_path)))
        fetched = client.download(job["id"], scratch)
        missing = sorted(set(targets) - set(fetched))
        if missing:
            raise MRISRError(f"the server's result lacks {', '.join(missing)}: check the server's log")
        for name, target in targets.items():
            _install(fetched[name], target, targets)
        progress(ProgressEvent("download", 1, 1, str(output_path)))
    return RemoteResult(targets, state["result"], time.perf_counter() - started)
