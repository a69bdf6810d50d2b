"""Whole-volume inference: adapters that run patch or slice networks over a volume."""
