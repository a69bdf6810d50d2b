import json
import shutil

import pytest
import torch

from mrisr.errors import InputError
from mrisr.io.model_store import find_card, load_card, load_state_dict, save_model, shipped_folder


def test_save_and_load_round_trip_in_fp16(tmp_path, monkeypatch):
    monkeypatch.setenv("MRISR_MODELS", str(tmp_path))
    state = {"w": torch.linspace(-1, 1, 10), "steps": torch.tensor([3])}
    save_model(state, {"method": "demo", "_folder": "ignored"}, tmp_path, "demo_cpu")
    card = load_card("demo_cpu")
    assert card["weights"] == "demo_cpu.safetensors" and len(card["sha256"]) == 64 and "_folder" in card
    loaded = load_state_dict(card)
    torch.testing.assert_close(loaded["w"], state["w"], atol=1e-3, rtol=0)
    assert loaded["w"].dtype == torch.float32


def test_corrupted_weights_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MRISR_MODELS", str(tmp_path))
    for suffix in (".json", ".safetensors"):
        shutil.copy(shipped_folder() / f"ressrdiff_cpu{suffix}", tmp_path / f"ressrdiff_cpu{suffix}")
    data = bytearray((tmp_path / "ressrdiff_cpu.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "ressrdiff_cpu.safetensors").write_bytes(bytes(data))
    card = load_card("ressrdiff_cpu")
    assert card["_folder"] == str(tmp_path)  # the user's folder overrides the shipped card
    with pytest.raises(InputError, match="SHA256"):
        load_state_dict(card)


def test_missing_card_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("MRISR_MODELS", str(tmp_path))
    assert find_card("nothing_here") is None
    with pytest.raises(InputError, match="no trained weights"):
        load_card("nothing_here")


def test_every_shipped_card_matches_its_weights():
    cards = sorted(shipped_folder().glob("*.json"))
    assert cards
    for path in cards:
        card = json.loads(path.read_text())
        load_state_dict({**card, "_folder": str(path.parent)})  # raises on a SHA256 mismatch
        assert (path.parent / card["weights"]).stat().st_size < 25 * 2**20
