"""Per-method training tasks: `mrisr train --method M` imports mrisr.training.tasks.M and calls make_task."""
