"""Trained weights with their model cards: fp16 safetensors, SHA256-verified, shipped or user-provided.

A model card is a JSON file `<name>.json` beside its weights file; it names the method, preset, network
config, weights file and SHA256, training recipe and measured metrics. Shipped cards live in
`mrisr/weights/`; users add their own (e.g. paper-scale models trained on a GPU) to the folder named
by $MRISR_MODELS (default ~/.mrisr/models), where a card of the same name overrides the shipped one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

from mrisr.io.atomic import atomic_output
from mrisr.errors import InputError

log = logging.getLogger(__name__)


def shipped_folder() -> Path:
    return Path(str(resources.files("mrisr").joinpath("weights")))


def user_folder() -> Path:
    return Path(os.environ.get("MRISR_MODELS", Path.home() / ".mrisr" / "models")).expanduser()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_card(name: str) -> Path | None:
    """The card file for `name`: the user's folder first, then the shipped one; None if neither has it."""
    for folder in (user_folder(), shipped_folder()):
        path = folder / f"{name}.json"
        if path.is_file():
            return path
    return None


def load_card(name: str) -> dict[str, Any]:
    """The model card `name` with its folder recorded under "_folder"; InputError if there is none."""
    path = find_card(name)
    if path is None:
        raise InputError(
            f"no trained weights for {name!r}: train them with `mrisr train` or put {name}.json and its "
            f"weights file into {user_folder()}"
        )
    card = json.loads(path.read_text(encoding="utf-8"))
    card["_folder"] = str(path.parent)
    return card


def load_state_dict(card: dict[str, Any]) -> dict[str, Any]:
    """The card's weights as float32 tensors, after checking the file's SHA256 against the card."""
    from safetensors.torch import load_file

    path = Path(card["_folder"]) / card["weights"]
    if not path.is_file():
        raise InputError(f"weights file {path} named by its model card is missing: reinstall or retrain")
    actual = sha256_of(path)
    if actual != card["sha256"]:
        raise InputError(
            f"weights file {path} has SHA256 {actual[:12]}… but its card says {card['sha256'][:12]}…: "
            f"the file is corrupt or was replaced; restore it or update the card"
        )
    return {k: v.float() for k, v in load_file(str(path)).items()}


def save_model(state_dict: dict[str, Any], card: dict[str, Any], folder: Path, name: str) -> Path:
    """Write fp16 weights and their card (with SHA256) into `folder` atomically; returns the card path."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.safetensors"
    tensors = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in state_dict.items()}
    with atomic_output(weights, ".safetensors") as tmp:
        save_file(tensors, tmp)
    card = {k: v for k, v in card.items() if not k.startswith("_")}
    card.update(weights=weights.name, sha256=sha256_of(weights))
    card_path = folder / f"{name}.json"
    with atomic_output(card_path, ".json") as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(card, handle, indent=2, sort_keys=True)
    return card_path
