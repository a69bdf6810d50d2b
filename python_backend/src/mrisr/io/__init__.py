"""Files in and out: volumes, tissue segmentations, atomic writes, model weights and JSON reports."""
