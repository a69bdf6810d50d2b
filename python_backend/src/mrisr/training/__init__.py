"""Training: synthetic data pools, a resumable trainer (EMA, AMP on CUDA, DDP) and per-method tasks."""
