"""Transitional alias of `mrisr.diffusion.latent_ddpm` for `evaluation/benchmarks/diffmsr.py`; delete this
file once that benchmark imports `LatentDiffusionConfig` and `sample_prior` from `latent_ddpm`."""

from mrisr.diffusion.latent_ddpm import LatentDiffusionConfig, sample_prior

__all__ = ["LatentDiffusionConfig", "sample_prior"]
