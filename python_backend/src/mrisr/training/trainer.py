"""A resumable training loop shared by every method: AdamW with warm-up + cosine decay, EMA weights,
mixed precision on CUDA, gradient clipping, checkpoints, validation logs and DDP under torchrun.

A method plugs in through a `TrainingTask`; the trainer knows nothing of diffusion or of images.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from mrisr.device import autocast
from mrisr.io.atomic import atomic_output
from mrisr.io.model_store import save_model
from mrisr.progress import ProgressCallback, ProgressEvent, no_progress
from mrisr.training import distributed

log = logging.getLogger(__name__)


class TrainingTask(Protocol):
    """What a method provides to be trained."""

    name: str  # the model card name, e.g. "ressrdiff_cpu"

    def build_network(self) -> torch.nn.Module: ...

    def card(self) -> dict[str, Any]:
        """Card fields: method, preset, network config, data recipe, whether latent alignment was used, …"""

    def loss(self, network: torch.nn.Module, rng: np.random.Generator, generator: torch.Generator,
             device: str) -> torch.Tensor:
        """Draw a batch with `rng` and return the scalar training loss of `network` on it."""

    def validate(self, network: torch.nn.Module, device: str) -> dict[str, float]:
        """Metrics of the (EMA) network on fixed held-out data."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping settings of one run."""

    steps: int
    out: Path
    learning_rate: float = 2e-4
    warmup_steps: int = 100
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    validate_every: int = 500
    log_every: int = 10
    seed: int = 0
    device: str = "cpu"
    data: str | None = None  # a folder of the user's volumes (`--data`), None for the synthetic pairs


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, network: torch.nn.Module, decay: float) -> None:
    for target, source in zip(ema.state_dict().values(), network.state_dict().values()):
        if target.dtype.is_floating_point:
            target.mul_(decay).add_(source.detach(), alpha=1 - decay)
        else:
            target.copy_(source)


class Trainer:
    """Runs (or resumes) a task's training and writes the final EMA weights with their model card."""

    def __init__(self, task: TrainingTask, config: TrainConfig, progress: ProgressCallback = no_progress):
        self.task, self.config, self.progress = task, config, progress
        self.context = distributed.setup(config.device)
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        self.network = task.build_network().to(self.context.device)
        self.ema = copy.deepcopy(self.network).eval().requires_grad_(False)
        self.model = distributed.wrap(self.network, self.context)
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=config.learning_rate, weight_decay=0.0)
        self.rng = np.random.default_rng([config.seed, self.context.rank])
        self.generator = torch.Generator(device=self.context.device).manual_seed(config.seed * 1000 + self.context.rank)
        self.step, self.elapsed, self.validation = 0, 0.0, {}
        self._resume()

    @property
    def checkpoint_path(self) -> Path:
        return self.config.out / "checkpoint.pt"

    def _resume(self) -> None:
        if not self.checkpoint_path.exists():
            return
        state = torch.load(self.checkpoint_path, map_location=self.context.device, weights_only=False)
        self.network.load_state_dict(state["network"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"][self.context.rank]
        self.generator.set_state(state["generator"][self.context.rank].to("cpu"))
        self.step, self.elapsed, self.validation = state["step"], state["elapsed"], state["validation"]
        log.info("resumed %s at step %d", self.task.name, self.step)

    def _gather(self, value: Any) -> list[Any]:
        if self.context.world_size == 1:
            return [value]
        values = [None] * self.context.world_size
        torch.distributed.all_gather_object(values, value)
        return values

    def _save_checkpoint(self) -> None:
        rngs, generators = self._gather(self.rng.bit_generator.state), self._gather(self.generator.get_state())
        if not self.context.is_main:
            return
        self.config.out.mkdir(parents=True, exist_ok=True)
        state = {"network": self.network.state_dict(), "ema": self.ema.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "rng": rngs, "generator": generators,
                 "step": self.step, "elapsed": self.elapsed, "validation": self.validation}
        with atomic_output(self.checkpoint_path, ".pt") as tmp:
            torch.save(state, tmp)

    def _log(self, record: dict[str, Any]) -> None:
        if self.context.is_main:
            self.config.out.mkdir(parents=True, exist_ok=True)
            with open(self.config.out / "train_log.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def _train_step(self) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, self.step)
        device = self.context.device
        dtype = torch.bfloat16 if device.startswith("cuda") else None
        with autocast(device, dtype):
            loss = self.task.loss(self.model, self.rng, self.generator, device)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.grad_clip)
        self.optimizer.step()
        update_ema(self.ema, self.network, self.config.ema_decay if self.step >= self.config.warmup_steps else 0.0)
        return float(loss.detach())

    def _validate(self) -> None:
        if self.context.is_main:
            self.validation = {"step": self.step, **self.task.validate(self.ema, self.context.device)}
            self._log({"validation": self.validation})
        distributed.barrier(self.context)

    def run(self, pause_at: int | None = None, time_budget: float | None = None) -> Path | None:
        """Train up to `config.steps` and write the card (main process: its path); or pause with a
        checkpoint at step `pause_at` or after `time_budget` seconds (returns None; run again to resume)."""
        smoothed, started_run = None, time.perf_counter()
        stop = self.config.steps if pause_at is None else min(pause_at, self.config.steps)
        while self.step < stop:
            if time_budget is not None and time.perf_counter() - started_run > time_budget:
                break
            started = time.perf_counter()
            loss = self._train_step()
            self.elapsed += time.perf_counter() - started
            self.step += 1
            smoothed = loss if smoothed is None else 0.98 * smoothed + 0.02 * loss
            self.progress(ProgressEvent("train", self.step, self.config.steps, f"loss {smoothed:.4f}"))
            if self.step % self.config.log_every == 0:
                self._log({"step": self.step, "loss": loss, "lr": learning_rate(self.config, self.step - 1),
                           "seconds": round(self.elapsed, 1)})
            if self.step % self.config.validate_every == 0 or self.step == self.config.steps:
                self._validate()
            if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                self._save_checkpoint()
        if self.step < self.config.steps:
            self._save_checkpoint()
            distributed.teardown(self.context)
            return None
        card_path = self._write_card() if self.context.is_main else None
        distributed.teardown(self.context)
        return card_path

    def _write_card(self) -> Path:
        training = {**{k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.config).items()},
                    "training_seconds": round(self.elapsed, 1), "world_size": self.context.world_size,
                    "torch": torch.__version__}
        card = {**self.task.card(), "name": self.task.name, "training": training, "validation": self.validation}
        if self.config.data:
            card["data"] = (f"user volumes from {self.config.data} (train/ and validation/ subjects), each degraded "
                            "by mrisr.simulation.synthetic.random_degradation")
        return save_model(self.ema.state_dict(), card, self.config.out, self.task.name)
