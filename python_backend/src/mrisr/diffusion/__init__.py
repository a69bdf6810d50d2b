"""Noise schedules and samplers (they know nothing of patches, slices or files)."""
