"""Benchmarks run by `mrisr bench NAME`; each module exposes `add_arguments(parser)` and `run(args, progress) -> dict`.

A module dropped into this folder is a benchmark. `available()` lists them from their docstrings without
importing them (they import torch and `resource`), so the CLI starts fast and on every platform.
"""

from __future__ import annotations

import ast
from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def available() -> dict[str, str]:
    """Benchmark name → the first line of its module docstring, read with `ast` (nothing is imported)."""
    found = {}
    for path in sorted(FOLDER.glob("*.py")):
        if path.name.startswith("_"):
            continue
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        found[path.stem] = (docstring.strip().splitlines() or [""])[0]
    return found
