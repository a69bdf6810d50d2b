"""Progress reporting and cancellation shared by the pipeline, the CLI and the Slicer module."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from mrisr.errors import CancelledError


@dataclass(frozen=True)
class ProgressEvent:
    """`done` of `total` units of a named stage (e.g. "resample", "sample")."""

    stage: str
    done: int
    total: int
    message: str = ""


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
