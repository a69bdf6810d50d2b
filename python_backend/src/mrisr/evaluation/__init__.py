"""Measuring results: image-quality metrics, LPIPS, the benchmarks and the demo."""
