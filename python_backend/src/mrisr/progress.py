"""Progress reporting and cancellation shared by the pipeline, the CLI and the Slicer module."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from mrisr.errors import CancelledError


@dataclass(frozen=True)
class ProgressEvent:
    """`done` of `total` units of a named stage (e.g. "resample", "sample").

    `overall` (0..1, never decreasing within a run) and `eta_s` (seconds left) are the whole run's, filled in
    by `mrisr.run_progress.OverallProgress`; None where no run is tracked (or, for `eta_s`, not yet known).
    """

    stage: str
    done: int
    total: int
    message: str = ""
    overall: float | None = None
    eta_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of `--progress json` lines and of the server's job events."""
        return {"stage": self.stage, "done": self.done, "total": self.total, "message": self.message,
                "overall": None if self.overall is None else round(self.overall, 4),
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProgressEvent:
        """The event of a `to_json` object; `overall` and `eta_s` may be missing (older servers)."""
        return cls(str(data["stage"]), int(data["done"]), int(data["total"]), str(data.get("message", "")),
                   data.get("overall"), data.get("eta_s"))


ProgressCallback = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    """A progress callback that ignores events."""


class CancelToken:
    """Thread-safe cancellation flag; long loops call `check()` between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise CancelledError("cancelled by the user; no output was written")
