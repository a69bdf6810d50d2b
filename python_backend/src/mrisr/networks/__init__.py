"""Neural networks (they know nothing of noise schedules, patches or files)."""
