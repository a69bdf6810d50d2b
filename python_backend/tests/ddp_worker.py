"""Run under torchrun: trains SharpenTask a few steps with DDP (gloo) and writes this rank's weights."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from training_task import SharpenTask  # noqa: E402

from mrisr.training.trainer import TrainConfig, Trainer  # noqa: E402

out = Path(sys.argv[1])
trainer = Trainer(SharpenTask(), TrainConfig(steps=4, out=out, warmup_steps=1, checkpoint_every=100, validate_every=100))
rank = trainer.context.rank
weights = {k: v.clone() for k, v in trainer.network.state_dict().items()}
trainer.run()
torch.save({"before": weights, "after": trainer.network.state_dict()}, out / f"rank{rank}.pt")
