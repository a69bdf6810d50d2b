"""Distributed data parallel set-up: the same training command runs alone or under `torchrun`."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """This process's place in the job: rank, world size and device."""

    rank: int
    world_size: int
    device: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> Context:
    """Join the process group when launched by torchrun (NCCL on GPUs, gloo on CPU); else a single process.

    Under torchrun each rank uses CUDA device LOCAL_RANK when `device` is CUDA.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Context(0, 1, device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), device)


def wrap(network: torch.nn.Module, context: Context) -> torch.nn.Module:
    """DistributedDataParallel around the network when there are several processes."""
    if context.world_size == 1:
        return network
    device_ids = [torch.device(context.device).index] if context.device.startswith("cuda") else None
    return torch.nn.parallel.DistributedDataParallel(network, device_ids=device_ids)


def barrier(context: Context) -> None:
    if context.world_size > 1:
        dist.barrier()


def teardown(context: Context) -> None:
    if context.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
