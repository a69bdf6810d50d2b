"""MRI super-resolution backend: volume I/O, degradation, tiling, methods, metrics and CLI."""

__version__ = "0.1.0"
