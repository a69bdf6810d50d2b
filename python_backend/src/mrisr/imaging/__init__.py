"""Image grids and their resampling, head masks, intensity normalisation, rigid registration and back-projection."""
