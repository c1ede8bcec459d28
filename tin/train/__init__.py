"""The per-worker training loop and what it needs: config, schedules, metrics, checkpoints,
progress reporting and the DDP helpers. Only ``loop`` and ``progress`` import Ray
or MLflow; ``step`` (the optimiser, the training step and epoch) runs without them, and
``checkpoint`` and ``config`` stay light for inference and export."""
