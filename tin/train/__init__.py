"""The per-worker training loop and what it needs: config, schedules, metrics, checkpoints,
progress reporting and the DDP helpers. Only ``loop`` and ``progress`` import Ray
or MLflow; ``checkpoint`` and ``config`` stay light for inference and export."""
