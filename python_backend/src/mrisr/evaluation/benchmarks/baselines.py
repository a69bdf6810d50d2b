"""Seconds and peak memory of the interpolation baselines on the MNI152 thick-slice sample."""

from __future__ import annotations

import argparse
import time

from mrisr.simulation.degradation import PRESETS, degrade
from mrisr.pipeline import EnhanceOptions, enhance
from mrisr.progress import ProgressCallback
from mrisr.simulation.template import mni_image
from mrisr.evaluation.process_usage import peak_rss_mib


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="thick5", help="degradation preset of the input (default thick5)")


def run(args: argparse.Namespace, progress: ProgressCallback) -> dict:
    lr = degrade(mni_image("t1", pad_to_multiple=40), PRESETS[args.preset])
    rows = {}
    for method in ("nearest", "linear", "bspline", "lanczos"):
        started = time.perf_counter()
        result = enhance(lr, EnhanceOptions(method=method), progress=progress)
        rows[method] = {"seconds": round(time.perf_counter() - started, 2), "output_size": list(result.image.GetSize())}
    rows["peak_rss_mib"] = peak_rss_mib()
    return rows
