"""Training: the loop, losses, checkpoints, cross-validation splits and DDP.

Entry point: :func:`autoseg.training.run.train` (``autoseg train``).
"""
