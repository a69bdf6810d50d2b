"""Simulated acquisitions: slice-profile and k-space degradation, the MNI152 template data and synthetic training pairs."""
