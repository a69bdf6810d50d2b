import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mrisr.io.model_store import load_state_dict
from mrisr.training.trainer import TrainConfig, Trainer, learning_rate

sys.path.insert(0, str(Path(__file__).parent))
from training_task import SharpenTask  # noqa: E402


def config(tmp_path, steps, **kwargs):
    return TrainConfig(steps=steps, out=tmp_path, warmup_steps=5, checkpoint_every=10, validate_every=10,
                       learning_rate=3e-3, **kwargs)


def test_learning_rate_warms_up_then_decays():
    c = TrainConfig(steps=100, out=Path("."), warmup_steps=10, learning_rate=1.0)
    assert learning_rate(c, 0) == pytest.approx(0.1) and learning_rate(c, 9) == pytest.approx(1.0)
    assert learning_rate(c, 99) == pytest.approx(0.1, abs=0.01) and learning_rate(c, 50) < 1.0


def test_training_learns_and_writes_a_verified_card(tmp_path):
    card_path = Trainer(SharpenTask(), config(tmp_path, 60)).run()
    card = json.loads(card_path.read_text())
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert sum(losses[-2:]) < sum(losses[:2])
    assert card["validation"]["step"] == 60 and card["training"]["steps"] == 60
    state = load_state_dict({**card, "_folder": str(tmp_path)})
    assert state["0.weight"].shape == (8, 1, 3, 3)


def test_resume_continues_exactly(tmp_path):
    straight = Trainer(SharpenTask(), config(tmp_path / "a", 20))
    straight.run()
    assert Trainer(SharpenTask(), config(tmp_path / "b", 20)).run(pause_at=13) is None
    resumed = Trainer(SharpenTask(), config(tmp_path / "b", 20))
    assert resumed.step == 13
    resumed.run()
    for key, value in straight.network.state_dict().items():
        torch.testing.assert_close(resumed.network.state_dict()[key], value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_with_gloo_keeps_replicas_identical(tmp_path):
    worker = Path(__file__).parent / "ddp_worker.py"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), str(worker), str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for key in ranks[0]["after"]:
        torch.testing.assert_close(ranks[0]["after"][key], ranks[1]["after"][key])
        assert not torch.equal(ranks[0]["after"][key], ranks[0]["before"][key])
