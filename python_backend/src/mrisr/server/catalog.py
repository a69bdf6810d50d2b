"""What a server offers: the methods document of `mrisr methods --json`, its devices and its limits."""

from __future__ import annotations

from typing import Any

from mrisr.server.config import SINGLE_FILE_SUFFIXES, ServerConfig


def methods_document(config: ServerConfig) -> dict[str, Any]:
    """What `mrisr methods --json` prints (`mrisr.plan.catalog`), with this server's voxel limit."""
    from mrisr.plan import catalog

    document = catalog()
    document["limits"]["max_voxels"] = config.max_voxels
    return document


def devices() -> list[dict[str, Any]]:
    """The CUDA GPUs with their total and free memory in MiB (empty without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    found = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        found.append({"device": f"cuda:{index}", "name": torch.cuda.get_device_name(index),
                      "total_mib": total // 2**20, "free_mib": free // 2**20})
    return found


def server_document(config: ServerConfig) -> dict[str, Any]:
    """GET /v1/methods: the methods, plus where and within which limits this server runs them. Clients
    estimate run times with the method's `seconds_per_megavoxel[server.device]`."""
    return methods_document(config) | {"server": {
        "device": config.device, "workers": config.workers,
        "gpus": devices() if config.device == "cuda" else [],
        "max_upload_bytes": config.max_upload_bytes, "max_voxels": config.max_voxels,
        "ttl_seconds": config.ttl_seconds, "queue_size": config.queue_size,
        "upload_suffixes": list(SINGLE_FILE_SUFFIXES)}}
