"""Progress shown to people (tqdm bars with ETA) or to programs (JSON lines), and atomic JSON reports."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

from mrisr.io.atomic import atomic_output
from mrisr.progress import ProgressCallback, ProgressEvent, no_progress


def _json_lines(event: ProgressEvent) -> None:
    print(json.dumps(event.to_json()), file=sys.stderr, flush=True)


class _TqdmBars:
    """One tqdm bar per stage, replaced when the stage changes."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.bar = None

    def __call__(self, event: ProgressEvent) -> None:
        from tqdm import tqdm

        if event.stage != self.stage:
            self.close()
            self.stage = event.stage
            # a stage resumed part-way (the next posterior sample) starts at `initial`, so the ETA uses
            # only the rate measured since
            self.bar = tqdm(total=event.total, initial=event.done, desc=event.stage, unit="it", file=sys.stderr,
                            leave=False)
        self.bar.total = event.total
        self.bar.n = event.done
        self.bar.set_postfix_str(event.message[-40:], refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def make_progress(kind: str) -> tuple[ProgressCallback, Callable[[], None]]:
    """A progress callback of the given kind ("bar", "json", "none") and a function that closes it."""
    if kind == "json":
        return _json_lines, lambda: None
    if kind == "bar":
        bars = _TqdmBars()
        return bars, bars.close
    return no_progress, lambda: None


def _strict(value: Any) -> Any:
    """Replace non-finite floats (e.g. PSNR of identical images = inf) by None: strict JSON has no Infinity."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a JSON report atomically (temporary file, then rename), non-finite numbers as null."""
    with atomic_output(path, ".json") as tmp_name, open(tmp_name, "w", encoding="utf-8") as handle:
        json.dump(_strict(data), handle, indent=2, sort_keys=True, allow_nan=False)
    return path
