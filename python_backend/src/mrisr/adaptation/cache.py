"""Adapted weights kept per input, so a re-run with other steps, samples or planes does not train again.

The key hashes what the fine-tuning saw and did: the normalised input array and its spacing, the method,
the shipped weights it started from (their SHA256), and the adaptation settings. Files live in
$MRISR_CACHE/adapted (default ~/.cache/mrisr/adapted) as `<key>.safetensors` with a `<key>.json` beside
it; both are written atomically, and a missing or unreadable entry simply means "adapt again".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrisr.io.atomic import atomic_output

log = logging.getLogger(__name__)


def cache_folder() -> Path:
    root = os.environ.get("MRISR_CACHE", Path.home() / ".cache" / "mrisr")
    return Path(root).expanduser() / "adapted"


def cache_key(volume: np.ndarray, spacing: tuple[float, ...], method: str, weights_sha256: str,
              settings: dict[str, Any]) -> str:
    """A hex digest of the input's content and geometry, the method, its starting weights and settings."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(volume, dtype=np.float32).tobytes())
    digest.update(json.dumps({"shape": list(volume.shape), "spacing": [round(float(s), 6) for s in spacing],
                              "method": method, "weights": weights_sha256, "settings": settings},
                             sort_keys=True).encode())
    return digest.hexdigest()[:32]


def load_adapted(key: str) -> dict[str, torch.Tensor] | None:
    """The cached state dict for `key`, or None when there is none (or it cannot be read)."""
    path = cache_folder() / f"{key}.safetensors"
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    try:
        return {name: tensor.float() for name, tensor in load_file(str(path)).items()}
    except Exception as exc:  # a damaged cache entry is not the user's problem: adapt again
        log.warning("ignoring the unreadable adapted weights %s (%s)", path, exc)
        return None


def store_adapted(key: str, state: dict[str, torch.Tensor], record: dict[str, Any]) -> Path:
    """Write the adapted state dict (fp16) and a JSON record of how it was made; returns the weights path."""
    from safetensors.torch import save_file

    folder = cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.safetensors"
    with atomic_output(path) as temporary:
        save_file({k: v.detach().to("cpu", torch.float16).contiguous() for k, v in state.items()}, str(temporary))
    with atomic_output(folder / f"{key}.json") as temporary:
        Path(temporary).write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")
    return path
