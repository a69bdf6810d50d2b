"""Server settings, parsed from the command line at the edge (`mrisr serve`)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from mrisr.imaging.geometry import DEFAULT_MAX_VOXELS

TOKEN_ENVIRONMENT = "MRISR_SERVER_TOKEN"
SINGLE_FILE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")  # what an upload may be; the rest is converted first


@dataclass(frozen=True)
class ServerConfig:
    """What one server accepts and how it runs its jobs.

    device: "cpu" or "cuda" (each worker gets its own GPU through CUDA_VISIBLE_DEVICES) — the server,
    not the client, chooses where jobs run. ttl_seconds: how long a finished job and its result are kept
    for download. queue_size: queued (not yet running) jobs accepted before POST answers 503.
    cpu_threads: torch threads of each CPU worker.
    """

    token: str
    work_dir: Path
    device: str = "cpu"
    workers: int = 1
    max_upload_bytes: int = 2 * 1024**3
    max_voxels: int = DEFAULT_MAX_VOXELS
    ttl_seconds: float = 3600.0
    queue_size: int = 16
    cpu_threads: int | None = None  # torch threads per CPU worker; default: the cores shared among workers


def new_token() -> str:
    """A random bearer token for a server started without one."""
    return secrets.token_urlsafe(24)
