"""Training recipe of DiffMSR without reference (the paper's ablation, method "diffmsr-noref"): the
same two stages as `diffmsr`, with a network that has no reference embedding and no CATL."""

from __future__ import annotations

import argparse

from mrisr.training.tasks.diffmsr import DiffMSRTask
from mrisr.training.tasks.diffmsr import make_task as _make_task


def make_task(preset_name: str, args: argparse.Namespace) -> DiffMSRTask:
    return _make_task(preset_name, args, with_reference=False)
