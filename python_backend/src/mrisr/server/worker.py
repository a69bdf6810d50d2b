"""The worker process: runs one job folder at a time with `mrisr.pipeline.enhance_file`.

The server starts it as `python -m mrisr.server.worker` and keeps it warm (imports, loaded weights, CUDA
context). It reads one job spec per line on stdin and answers with JSON lines on the stdout it had at
start: `{"event": {...}}` while running, then `{"done": summary}` or `{"error": message, "input": bool}`.
Anything libraries print goes to stderr instead. Cancel and crashes are handled by the server, which
kills this process and starts another.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from mrisr.errors import MRISRError
from mrisr.progress import ProgressEvent

log = logging.getLogger(__name__)
EVENT_INTERVAL_SECONDS = 0.1  # at most this often per stage, besides its first and last event


class _ThrottledEvents:
    """Forward progress events, dropping those closer than EVENT_INTERVAL_SECONDS within a stage."""

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        self.send = send
        self.stage: str | None = None
        self.last = 0.0

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        boundary = event.stage != self.stage or event.done in (0, event.total)
        if boundary or now - self.last >= EVENT_INTERVAL_SECONDS:
            self.stage, self.last = event.stage, now
            self.send({"event": event.to_json()})


def run_job(spec: dict[str, Any], progress: Callable[[ProgressEvent], None]) -> dict[str, Any]:
    """Run one job inside its folder (`spec["folder"]`; every path in the spec is a name in it) and
    return the summary that `result.json` also holds."""
    from mrisr.io.reporting import write_json
    from mrisr.io.segmentations import read_labels
    from mrisr.io.volumes import read_volume
    from mrisr.pipeline import enhance_file
    from mrisr.plan import EnhanceOptions
    from mrisr.run_progress import OverallProgress
    from mrisr.segmentation.runs import SegmentationPaths, segment_enhancement

    folder = Path(spec["folder"])
    here = {key: folder / spec[key] if spec.get(key) else None
            for key in ("input", "reference", "reference_seg", "output", "uncertainty", "interpolated")}
    options = EnhanceOptions(**spec["options"])
    progress = OverallProgress(progress)
    result = enhance_file(here["input"], here["output"], options, here["reference"], progress,
                          uncertainty_path=here["uncertainty"], interpolated_path=here["interpolated"],
                          segment_after=bool(spec.get("segment")))
    summary = {"method": result.method, "settings": result.settings, "seconds": result.seconds,
               "size": list(result.image.GetSize()), "spacing": list(result.image.GetSpacing())}
    if spec.get("segment"):
        reference = read_labels(here["reference_seg"]) if here["reference_seg"] else None
        paths = SegmentationPaths.beside(here["output"])
        report = segment_enhancement(read_volume(here["input"]), result.image, paths, spec["segmenter"],
                                     result.settings["device"], reference, (here["input"],), progress)
        summary["tissues"] = {k: v for k, v in report.items() if k != "files"}
        progress.finish("segmented the input and the output")
    write_json(summary, folder / "result.json")
    return summary


def _serve(jobs: TextIO, channel: TextIO) -> None:
    """Answer job specs from `jobs` on `channel` until stdin closes."""
    def send(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    send({"ready": os.getpid()})
    for line in jobs:
        if not line.strip():
            continue
        try:
            send({"done": run_job(json.loads(line), _ThrottledEvents(send))})
        except MRISRError as exc:
            send({"error": str(exc), "input": True})
        except Exception as exc:  # a bug or a broken model: this job fails, the worker stays usable
            log.exception("job failed")
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            send({"error": f"the server failed on this job ({type(exc).__name__}: {first}); see the server log",
                  "input": False})


def main() -> None:
    """Keep the original stdout as the message channel and send everything else printed to stderr."""
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s worker %(name)s: %(message)s")
    import torch

    import mrisr.pipeline  # noqa: F401  (warm: the first job does not pay for the imports)

    threads = os.environ.get("MRISR_WORKER_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    _serve(sys.stdin, channel)


if __name__ == "__main__":
    main()
