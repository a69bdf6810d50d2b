"""Benchmarks run by `mrisr bench NAME`; each module exposes `run(args) -> dict`."""
