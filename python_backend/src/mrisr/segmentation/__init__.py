"""Brain tissue segmentation (background / CSF / GM / WM): segmenters, tissue classes, agreement tables and runs."""
